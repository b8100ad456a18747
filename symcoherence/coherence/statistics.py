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

Uncertainty: a seeded **paired percentile bootstrap** over probes. Each resample draws ``N`` probe
indices with replacement and applies them to every element at once (ratios to the identity keep
their pairing); the interval is the ``(1 ± confidence)/2`` percentiles of the resampled statistic.
The per-probe values are held fixed (a row's normalization is not recomputed).

Example:
    >>> import torch
    >>> from symcoherence.coherence.statistics import specific_coupling
    >>> h = torch.tensor([[[5.0, 1.0, 2.0, 3.0], [1.0, 5.0, 2.0, 3.0],
    ...                    [1.0, 2.0, 5.0, 3.0], [1.0, 2.0, 3.0, 5.0]]])
    >>> specific_coupling(h)
    tensor([[3., 3., 3., 3.]], dtype=torch.float64)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

# Exact permutation tests up to this many permutations, seeded random permutations beyond.
_EXACT_PERMUTATIONS = 40_320
_RANDOM_PERMUTATIONS = 20_000


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


def _nan_where(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
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
    return _nan_where(degenerate, (diagonal - off.mean(-1)) / torch.where(degenerate, 1.0, spread))


def unit_transfer(matrix: torch.Tensor, bra_norm: torch.Tensor) -> torch.Tensor:
    """``t_n(g) = mean_{m≠n} H^g[n, m] / ‖b_n^g‖`` ``(K, N)`` float64; NaN where ``‖b‖ = 0``."""
    matrix, bra_norm = matrix.to(torch.float64), bra_norm.to(torch.float64)
    if matrix.shape[-1] < 2:
        return torch.full(matrix.shape[:-1], float("nan"), dtype=torch.float64)
    degenerate = ~(bra_norm > 0)
    mean = _off_diagonal(matrix).mean(-1)
    return _nan_where(degenerate, mean / torch.where(degenerate, 1.0, bra_norm))


def bootstrap_interval(
    statistic: Callable[[torch.Tensor], torch.Tensor],
    num_samples: int,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired percentile bootstrap over probes.

    Args:
        statistic: maps probe indices ``(B, N)`` to the statistic of each resample ``(..., B)``.
        num_samples: ``N``.
        confidence: two-sided level, e.g. ``0.9``.
        resamples: ``B``.
        seed: seed of the index draws (the global RNG is not used).

    Returns:
        ``(lower, upper)``, each shaped like one resample's statistic ``(...)``; NaN where fewer
        than half of the resamples give a finite value.
    """
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(num_samples, (resamples, num_samples), generator=generator)
    values = statistic(indices).to(torch.float64)
    alpha = (1.0 - confidence) / 2
    lower, upper = quantiles(values, [alpha, 1.0 - alpha])
    unstable = torch.isfinite(values).double().mean(-1) < 0.5
    return _nan_where(unstable, lower), _nan_where(unstable, upper)


def resampled_medians(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Medians of ``values`` ``(K, N)`` over each resample of probe ``indices`` ``(B, N)`` -> ``(K, B)``."""
    return quantiles(values[:, indices], [0.5])[0]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    below = (values[None, :] < values[:, None]).sum(1).to(torch.float64)
    equal = (values[None, :] == values[:, None]).sum(1).to(torch.float64)
    return below + (equal + 1) / 2


def _significant(values: torch.Tensor, digits: int = 6) -> torch.Tensor:
    """``values`` rounded to ``digits`` significant digits of their largest magnitude."""
    scale = values.abs().max()
    return values if scale == 0 else torch.round(values / scale * 10**digits)


def _rank_correlation(rx: torch.Tensor, ry: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of centred ranks ``ry`` ``(..., n)`` with ``rx`` ``(n,)``."""
    return (rx * ry).sum(-1) / (rx.pow(2).sum() * ry.pow(2).sum(-1)).sqrt()


def spearman(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> tuple[float, float] | None:
    """Spearman's rank correlation of two 1-D tensors and its two-sided permutation p-value.

    The p-value is the fraction of permutations of ``y`` whose ``|r|`` reaches the observed one:
    exact over all ``n!`` permutations up to ``n = 8``, else from 20 000 seeded random ones. Values
    are compared to 6 significant digits, so round-off differences are ties (an exactly
    equivariant model has no correlation to report).

    Returns:
        ``(r, p)``, or ``None`` when undefined: fewer than 3 values, a non-finite value, or a
        constant side.

    Example:
        >>> r, p = spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 4.0, 9.0]))
        >>> r, round(p, 4)
        (1.0, 0.0833)
    """
    n = x.numel()
    if n < 3 or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return None
    rx, ry = _ranks(_significant(x.double())), _ranks(_significant(y.double()))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    if rx.pow(2).sum() == 0 or ry.pow(2).sum() == 0:
        return None
    observed = float(_rank_correlation(rx, ry))
    if math.factorial(n) <= _EXACT_PERMUTATIONS:
        orders = torch.tensor(list(itertools.permutations(range(n))))
    else:
        generator = torch.Generator().manual_seed(seed)
        orders = torch.argsort(torch.rand(_RANDOM_PERMUTATIONS, n, generator=generator), dim=1)
    null = _rank_correlation(rx, ry[orders]).abs()
    p_value = float((null >= abs(observed) - 1e-12).double().mean())
    return observed, p_value


__all__ = [
    "bootstrap_interval",
    "quantiles",
    "resampled_medians",
    "spearman",
    "specific_coupling",
    "unit_transfer",
]
