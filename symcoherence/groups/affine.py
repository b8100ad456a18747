r"""Affine maps of the grid plane, ``x ↦ M x + t``, and how they move a field's grid.

``M`` is a 2×2 signed permutation (an element of D4) and ``t`` a translation in grid cells; ``x``
is the last array axis. :func:`move_grid` applies ``x ↦ M x`` to a field's grid as an exact
permutation about grid point ``(0, 0)``; :func:`fourier_shift` translates by a sub-pixel shift with
a phase ramp (exact for band-limited fields). The group classes of :mod:`.planar` are tables of
such maps.

Example:
    >>> quarter = Affine(ROTATION)
    >>> (quarter @ quarter @ quarter @ quarter) == Affine()
    True
    >>> axis_periods(16), axis_periods((16, None))
    ((16, 16), (16, None))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Matrix = tuple[tuple[int, int], tuple[int, int]]
IDENTITY: Matrix = ((1, 0), (0, 1))
ROTATION: Matrix = ((0, -1), (1, 0))
REFLECTION: Matrix = ((-1, 0), (0, 1))


def matmul(a: Matrix, b: Matrix) -> Matrix:
    """The product ``a b`` of two 2×2 integer matrices."""
    return tuple(
        tuple(sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)) for i in range(2)
    )  # type: ignore[return-value]


def apply_matrix(m: Matrix, t: tuple[float, float]) -> tuple[float, float]:
    """``m t`` for a vector ``t``."""
    return (m[0][0] * t[0] + m[0][1] * t[1], m[1][0] * t[0] + m[1][1] * t[1])


def transpose(m: Matrix) -> Matrix:
    """``mᵀ``: the inverse of an orthogonal matrix."""
    return ((m[0][0], m[1][0]), (m[0][1], m[1][1]))


@dataclass(frozen=True)
class Affine:
    """An affine lattice map ``x ↦ M x + t`` (``M`` signed permutation, ``t`` in grid cells)."""

    matrix: Matrix = IDENTITY
    shift: tuple[float, float] = (0.0, 0.0)

    def __matmul__(self, other: Affine) -> Affine:
        shift = apply_matrix(self.matrix, other.shift)
        return Affine(
            matmul(self.matrix, other.matrix),
            (shift[0] + self.shift[0], shift[1] + self.shift[1]),
        )

    def inverse(self) -> Affine:
        """``(M, t)⁻¹ = (Mᵀ, −Mᵀ t)``."""
        back = transpose(self.matrix)
        shift = apply_matrix(back, self.shift)
        return Affine(back, (-shift[0], -shift[1]))

    @property
    def swaps_axes(self) -> bool:
        """Whether ``M`` exchanges the x and y axes (a quarter turn or a diagonal mirror)."""
        return self.matrix[0][0] == 0


def axis_periods(period: Any) -> tuple[int | None, int | None]:
    """``(p_x, p_y)`` from a ``period`` argument: ``None``, one number, or a pair (``None`` = open).

    Raises:
        ValueError: for anything else, or a period that is not a positive integer.
    """
    if period is None:
        return (None, None)
    pair = (period, period) if isinstance(period, int) else period
    if (
        isinstance(pair, str)
        or not isinstance(pair, Sequence)
        or len(pair) != 2
        or any(
            p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1) for p in pair
        )
    ):
        raise ValueError(
            f"period must be a positive number of grid cells or a pair (p_x, p_y) with None for a "
            f"non-periodic axis, got {period!r}"
        )
    return (pair[0], pair[1])


def plain_period(period: Any) -> Any:
    """``period`` as JSON-friendly data (a pair becomes a list)."""
    return period if period is None or isinstance(period, int) else list(period)


def negate_axis(field: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[k] = field[-k mod n]`` along ``dim``: the point reflection about index 0."""
    return torch.roll(torch.flip(field, dims=(dim,)), shifts=1, dims=dim)


def move_grid(field: torch.Tensor, matrix: Matrix) -> torch.Tensor:
    """``out[j, i] = field[q_y, q_x]`` with ``q = M⁻¹ (i, j)``: the grid part of ``x ↦ M x``."""
    (a, b), (c, d) = transpose(matrix)  # M⁻¹ for a signed permutation
    if a != 0:  # M⁻¹ diagonal: out[j, i] = field[d j, a i]
        if a < 0:
            field = negate_axis(field, -1)
        if d < 0:
            field = negate_axis(field, -2)
        return field
    # M⁻¹ anti-diagonal: out[j, i] = field[c i, b j] = fieldᵀ[b j, c i]
    field = field.transpose(-1, -2)
    if b < 0:
        field = negate_axis(field, -2)
    if c < 0:
        field = negate_axis(field, -1)
    return field


def fourier_shift(field: torch.Tensor, shift: tuple[float, float]) -> torch.Tensor:
    """Translate by a (sub-pixel) shift in cells with a phase ramp: exact for band-limited fields."""
    height, width = field.shape[-2:]
    real_dtype = field.dtype if field.is_floating_point() else torch.get_default_dtype()
    ky = torch.fft.fftfreq(height, d=1.0 / height, dtype=torch.float64, device=field.device)
    kx = torch.fft.rfftfreq(width, d=1.0 / width, dtype=torch.float64, device=field.device)
    phase = -2 * math.pi * (ky[:, None] * shift[1] / height + kx[None, :] * shift[0] / width)
    ramp = torch.polar(torch.ones_like(phase), phase)
    spectrum = torch.fft.rfft2(field.to(real_dtype))
    shifted = torch.fft.irfft2(spectrum * ramp.to(spectrum.dtype), s=(height, width))
    return shifted.to(field.dtype)


__all__ = [
    "IDENTITY",
    "REFLECTION",
    "ROTATION",
    "Affine",
    "Matrix",
    "apply_matrix",
    "axis_periods",
    "fourier_shift",
    "matmul",
    "move_grid",
    "negate_axis",
    "plain_period",
    "transpose",
]
