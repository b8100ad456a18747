r"""Spectral derivatives on the periodic unit square ``[0, 1)²``.

``∂f/∂x`` multiplies the Fourier coefficients along the last axis by ``i k``, ``k = 2π m``
(``∂/∂y``: along the second-to-last axis); the Nyquist mode of an even grid is zeroed, so the
derivative of a real field stays real and commutes exactly with the grid's reflections.

Example:
    >>> import math, torch
    >>> x = torch.arange(8, dtype=torch.float64) / 8
    >>> field = torch.sin(2 * math.pi * x)[None, :].expand(8, 8)
    >>> torch.allclose(spectral_derivative(field, -1), 2 * math.pi * torch.cos(2 * math.pi * x))
    True
"""

from __future__ import annotations

import math

import torch


def spectral_derivative(field: torch.Tensor, dim: int) -> torch.Tensor:
    """``∂/∂x`` (``dim=-1``) or ``∂/∂y`` (``dim=-2``) of a real periodic field, in float64."""
    field = field.to(torch.float64)
    n = field.shape[dim]
    k = 2 * math.pi * torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    if n % 2 == 0:
        k[n // 2] = 0.0
    shape = [1] * field.dim()
    shape[dim] = n
    spectrum = torch.fft.fft(field, dim=dim) * (1j * k).view(shape)
    return torch.fft.ifft(spectrum, dim=dim).real


__all__ = ["spectral_derivative"]
