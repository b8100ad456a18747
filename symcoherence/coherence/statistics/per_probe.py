r"""Per-probe statistics of the influence matrices and their uncertainty.

With raw influence ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m`` (``K × N × N``) and the Euclidean bra norms
``‖b_n^g‖`` (``K × N``):

* **specific coupling** ``z_n(g) = (H^g[n, n] − mean_{m≠n} H^g[n, m]) / std_{m≠n} H^g[n, m]``: how
  many off-diagonal standard deviations the orbit pair ``(g·x_n, x_n)`` stands above unrelated
  pairs. Invariant to a scale and to a common offset of the row; ``≈ 0`` when orbit partners are
  coupled no more than unrelated probes; equal to ``z_n(e)`` for an exactly equivariant model. Needs
  ``N ≥ 3`` (two off-diagonal entries for a spread).
* **transfer per unit gradient** ``t_n(g) = mean_{m≠n} H^g[n, m] / ‖b_n^g‖``: how much a step on the
  *other* probes lowers the loss at ``g·x_n``, with the size of the gradient at ``g·x_n`` (the
  residual there) divided out. The **distribution transfer** is
  ``τ(g) = median_n t_n(g) / median_n t_n(e)``: ``1`` when the data teach the model about ``g·x`` as
  much as about ``x``, ``< 0`` when a step on the data *raises* the loss at the transformed states.
  Rescaling outputs and targets rescales ``t`` by one factor for every element, so ``τ`` is scale
  free.

A row without spread or a bra without gradient gives NaN (a **degenerate** probe), never a silent
0; summaries skip NaN probes and report how many there were.

Their uncertainty: :mod:`.resampling`.

Example:
    >>> import torch
    >>> from symcoherence.coherence.statistics import specific_coupling
    >>> h = torch.tensor([[[5.0, 1.0, 2.0, 3.0], [1.0, 5.0, 2.0, 3.0],
    ...                    [1.0, 2.0, 5.0, 3.0], [1.0, 2.0, 3.0, 5.0]]])
    >>> specific_coupling(h)
    tensor([[3., 3., 3., 3.]], dtype=torch.float64)
"""

from __future__ import annotations

import torch


def quantiles(values: torch.Tensor, q: list[float]) -> torch.Tensor:
    """NaN-skipping quantiles along the last axis (linear interpolation): ``(..., N) -> (len(q), ...)``.

    A slice with no finite value gives NaN.
    """
    values = values.to(torch.float64)
    return torch.nanquantile(values, torch.tensor(q, dtype=values.dtype, device=values.device), -1)


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., N, N) -> (..., N, N − 1)``: each row without its diagonal entry."""
    num = matrix.shape[-1]
    keep = ~torch.eye(num, dtype=torch.bool, device=matrix.device)
    return matrix[..., keep].reshape(*matrix.shape[:-2], num, num - 1)


def nan_where(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN where ``mask`` holds (a degenerate probe is never a silent 0)."""
    return torch.where(mask, torch.full_like(values, float("nan")), values)


def specific_coupling(matrix: torch.Tensor) -> torch.Tensor:
    """``z_n(g)`` (module docstring) from raw ``H`` ``(K, N, N)`` -> ``(K, N)`` float64.

    NaN where the off-diagonal row has no spread, and everywhere for ``N < 3``.
    """
    matrix = matrix.to(torch.float64)
    if matrix.shape[-1] < 3:
        return torch.full(matrix.shape[:-1], float("nan"), dtype=torch.float64)
    off = _off_diagonal(matrix)
    spread = off.std(dim=-1)
    diagonal = matrix.diagonal(dim1=-2, dim2=-1)
    degenerate = ~(spread > 0)
    return nan_where(degenerate, (diagonal - off.mean(-1)) / torch.where(degenerate, 1.0, spread))


def unit_transfer(matrix: torch.Tensor, bra_norm: torch.Tensor) -> torch.Tensor:
    """``t_n(g) = mean_{m≠n} H^g[n, m] / ‖b_n^g‖`` ``(K, N)`` float64; NaN where ``‖b‖ = 0``."""
    matrix, bra_norm = matrix.to(torch.float64), bra_norm.to(torch.float64)
    if matrix.shape[-1] < 2:
        return torch.full(matrix.shape[:-1], float("nan"), dtype=torch.float64)
    degenerate = ~(bra_norm > 0)
    mean = _off_diagonal(matrix).mean(-1)
    return nan_where(degenerate, mean / torch.where(degenerate, 1.0, bra_norm))


__all__ = ["nan_where", "quantiles", "specific_coupling", "unit_transfer"]
