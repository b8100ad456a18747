r"""Autoregressive rollouts and their error metrics (pure torch).

Trajectories have layout ``(B, T, C, H, W)``: step ``t = 1 … T`` along axis 1. The metrics are

* normalized RMSE per sample and step, ``nRMSE = ‖ŷ − y‖ / ‖y‖`` over ``(C, H, W)``: 0 for a
  perfect model, 1 for a model that predicts zeros;
* the Pearson correlation ``ρ = cov(ŷ, y) / (σ_ŷ σ_y)`` over ``(C, H, W)``, and the **correlation
  time** at a threshold ``τ``: the number of leading steps with ``ρ ≥ τ``, i.e. the (0-based) index of
  the first step where ``ρ < τ``; it is ``T`` (the horizon, its maximum) if ``ρ`` never drops below;
* the error of the radially averaged energy spectrum ``E(k)`` (mean of ``|f̂(k)|²`` over the
  wavenumbers with ``round(|k|) = k``, summed over channels):
  ``ε = Σ_k |E_ŷ(k) − E_y(k)| / Σ_k E_y(k)``; 0 for a perfect model, 1 for a zero model, and
  blind to phase (a shifted field has error 0).

Example:
    >>> import torch
    >>> truth = torch.randn(2, 5, 1, 8, 8)
    >>> nrmse(truth, truth).shape, float(nrmse(torch.zeros_like(truth), truth).mean())
    (torch.Size([2, 5]), 1.0)
    >>> correlation_time(truth, truth, 0.9).tolist()
    [5.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_FIELD_DIMS = (-3, -2, -1)


def _check_pair(prediction: torch.Tensor, truth: torch.Tensor, minimum_dims: int = 3) -> None:
    if prediction.shape != truth.shape or truth.dim() < minimum_dims:
        raise ValueError(
            f"prediction and truth must have the same shape with at least {minimum_dims} "
            f"dimensions (..., C, H, W); got {tuple(prediction.shape)} and {tuple(truth.shape)}"
        )


def autoregressive_rollout(
    model: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int
) -> torch.Tensor:
    r"""Roll ``model`` out for ``steps`` steps from ``x0``.

    With a time history of ``k`` frames stacked along channels
    (``x = [u_{t-k+1}, …, u_t]``, ``C_in = k·C_out``), the next input drops the oldest frame and
    appends the prediction: ``x_{t+1} = [u_{t-k+2}, …, u_t, f(x_t)]``.

    Args:
        model: one-step map ``(B, C_in, H, W) -> (B, C_out, H, W)``.
        x0: initial input ``(B, C_in, H, W)``.
        steps: horizon ``T >= 1``.

    Returns:
        Predictions ``(B, T, C_out, H, W)``.

    Raises:
        ValueError: if ``C_in`` is not a multiple of ``C_out`` (inputs cannot be re-formed).

    Example:
        >>> import torch
        >>> autoregressive_rollout(lambda x: 2 * x[:, -1:], torch.ones(1, 2, 4, 4), 3)[0, :, 0, 0, 0]
        tensor([2., 4., 8.])
    """
    if steps < 1:
        raise ValueError(f"a rollout needs steps >= 1, got {steps}")
    state = x0
    predictions = []
    for _ in range(steps):
        prediction = model(state)
        in_channels, out_channels = state.shape[1], prediction.shape[1]
        if in_channels % out_channels:
            raise ValueError(
                f"cannot roll out a model with {in_channels} input and {out_channels} output "
                "channels: the input must be a stacked history of k output frames "
                f"(C_in = k·C_out); got shapes {tuple(state.shape)} -> {tuple(prediction.shape)}"
            )
        predictions.append(prediction)
        state = torch.cat([state[:, out_channels:], prediction], dim=1)
    return torch.stack(predictions, dim=1)


def nrmse(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``‖ŷ − y‖ / ‖y‖`` over the last three axes ``(C, H, W)``: ``(..., C, H, W) -> (...)``."""
    _check_pair(prediction, truth)
    error = (prediction - truth).flatten(-3).norm(dim=-1)
    scale = truth.flatten(-3).norm(dim=-1).clamp_min(torch.finfo(truth.dtype).tiny)
    return error / scale


def pearson_correlation(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``ŷ`` and ``y`` over ``(C, H, W)``: ``(..., C, H, W) -> (...)``.

    A constant field (zero variance) has correlation 0 with anything.
    """
    _check_pair(prediction, truth)
    p = prediction.flatten(-3)
    t = truth.flatten(-3)
    p = p - p.mean(dim=-1, keepdim=True)
    t = t - t.mean(dim=-1, keepdim=True)
    denominator = (p.norm(dim=-1) * t.norm(dim=-1)).clamp_min(torch.finfo(truth.dtype).tiny)
    return (p * t).sum(dim=-1) / denominator


def correlation_time(
    prediction: torch.Tensor, truth: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Number of leading steps with correlation ``>= threshold``: ``(B, T, C, H, W) -> (B,)``.

    Equals the index (0-based) of the first step whose Pearson correlation is below ``threshold``,
    or the horizon ``T`` if there is none (a perfect model reaches this maximum). In steps; multiply
    by the time step for physical time.
    """
    _check_pair(prediction, truth, minimum_dims=5)
    above = pearson_correlation(prediction, truth) >= threshold
    return above.to(truth.dtype).cumprod(dim=-1).sum(dim=-1)


def radial_energy_spectrum(field: torch.Tensor) -> torch.Tensor:
    """Radially averaged energy spectrum: ``(..., C, H, W) -> (..., K + 1)``, ``K = min(H, W) // 2``.

    ``E(k)`` is the mean of ``Σ_c |f̂_c(κ)|²`` over the integer wavevectors ``κ`` with
    ``round(|κ|) = k`` (``f̂`` the FFT normalized by ``1/(HW)``); corners with ``|κ| > K + ½`` are
    dropped.

    Example:
        >>> import torch
        >>> x = torch.arange(8.0)
        >>> wave = torch.cos(2 * torch.pi * 2 * x / 8).expand(1, 8, 8)   # |κ| = 2
        >>> radial_energy_spectrum(wave).argmax().item()
        2
    """
    height, width = field.shape[-2:]
    shells = min(height, width) // 2 + 1
    spectrum = torch.fft.fft2(field, norm="forward").abs().square().sum(dim=-3).flatten(-2)
    ky = torch.fft.fftfreq(height, d=1.0 / height, dtype=field.dtype, device=field.device)
    kx = torch.fft.fftfreq(width, d=1.0 / width, dtype=field.dtype, device=field.device)
    shell = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().flatten()
    members = (shell[:, None] == torch.arange(shells, dtype=field.dtype, device=field.device)).to(
        spectrum.dtype
    )
    return (spectrum @ members) / members.sum(dim=0)


def spectrum_error(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``Σ_k |E_ŷ(k) − E_y(k)| / Σ_k E_y(k)`` of the radial spectra: ``(..., C, H, W) -> (...)``."""
    _check_pair(prediction, truth)
    predicted = radial_energy_spectrum(prediction)
    true = radial_energy_spectrum(truth)
    scale = true.sum(dim=-1).clamp_min(torch.finfo(true.dtype).tiny)
    return (predicted - true).abs().sum(dim=-1) / scale
