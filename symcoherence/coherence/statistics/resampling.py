r"""Uncertainty of the per-probe statistics: a paired bootstrap over probes and permutation tests.

Uncertainty: a seeded **paired percentile bootstrap** over probes. Each resample draws ``N`` probe
indices with replacement and applies them to every element at once (ratios to the identity keep
their pairing); the interval is the ``(1 ± confidence)/2`` percentiles of the resampled statistic.
The per-probe values are held fixed (a row's normalization is not recomputed).

Across elements, :func:`spearman` gives the rank correlation of two statistics with its exact
(or seeded Monte Carlo) permutation p-value.

Example:
    >>> import torch
    >>> values = torch.arange(10.0)
    >>> lo, hi = bootstrap_interval(
    ...     lambda idx: values[idx].median(-1).values, 10, confidence=0.9, resamples=200, seed=0
    ... )
    >>> bool(lo <= 4.5 <= hi)
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from symcoherence.coherence.statistics.per_probe import nan_where, quantiles

# Exact permutation tests up to this many permutations, seeded random permutations beyond.
_EXACT_PERMUTATIONS = 40_320
_RANDOM_PERMUTATIONS = 20_000


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
    return nan_where(unstable, lower), nan_where(unstable, upper)


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


__all__ = ["bootstrap_interval", "resampled_medians", "spearman"]
