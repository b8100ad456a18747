r"""The default per-sample loss: scaled mean squared error.

.. math::

    \mathrm{smse}(\hat y, y) = \frac{1}{CHW} \sum_{c,h,w}
        \frac{(\hat y_{chw} - y_{chw})^2}{\mathrm{RMS}_c(y) + 10^{-6}},
    \qquad \mathrm{RMS}_c(y) = \sqrt{\tfrac{1}{HW}\textstyle\sum_{h,w} y_{chw}^2}.

The denominator is the RMS (not its square) of each target channel over space. Because the exact
group actions permute grid points and map channels by signed permutations that keep the two
components of a vector together, ``smse(g·ŷ, g·y) = smse(ŷ, y)`` for scalars and pseudoscalars;
for vectors the per-component RMS is permuted along with the components, so the loss is invariant
as well.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def smse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scaled MSE of one sample, or of each sample of a batch (see the module docstring).

    Args:
        prediction: ``(C, H, W)`` (per-sample, as used under ``vmap``) or ``(..., C, H, W)``.
        target: same shape as ``prediction``.

    Returns:
        A scalar for one sample; for leading batch dimensions, one value per sample ``(...)``.

    Example:
        >>> import torch
        >>> y = torch.ones(2, 4, 4)
        >>> float(smse(y, y))
        0.0
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    if target.dim() < 3:
        raise ValueError(f"smse expects (..., C, H, W) fields, got shape {tuple(target.shape)}")
    rms = target.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    return ((prediction - target).pow(2) / (rms + EPS)).mean(dim=(-3, -2, -1))
