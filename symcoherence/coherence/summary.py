r"""Scalar summaries of orbit influence under the logged key names of DESIGN §3.3.

With ``I_n(g) = Ĥ^g[n, n]`` the normalized diagonal (``K × N``) and ``e`` the identity:

* ``{p}influence/{G}/{g}/{median|q1|q3}``: quantiles over samples of ``I_n(g)`` (linear
  interpolation, so the median of an even count is the mean of the middle two);
* ``{p}coherence/{G}/ratio/{g}``: ``ρ(g) = median_n I_n(g) / median_n I_n(e)``;
* ``{p}coherence/{G}/orbit``: ``mean_{g≠e} ρ(g)``; ``{p}basin/{G}/compatibility``:
  ``min_{g≠e} ρ(g)``; with the identity as the only element both are ``1`` (ρ(e) = 1);
* ``{p}baseline/{G}/offdiag_median``: the ratio statistic on random pairs,
  ``median_{g, n, m≠n} Ĥ^g[n, m] / median_n I_n(e)`` (NaN for ``N = 1``);
* with forward errors ``E`` (``K × N``, :func:`~symcoherence.coherence.equivariance_error`):
  ``{p}equivariance/{G}/{g}/{median|q3}`` over samples, and
  ``{p}basin/{G}/influence_error_rank_corr``: Spearman's rank correlation (average ranks for ties)
  between ``ρ(g)`` and ``log median_n E_n(g)`` over ``g ≠ e``. The key is **omitted** when fewer
  than 3 such elements exist, when a value is not finite, or when either side is constant (the
  correlation is undefined there).

A ratio whose denominator ``median_n I_n(e)`` is zero is NaN (no finite ratio exists).

Example:
    >>> import torch
    >>> from symcoherence.coherence.summary import spearman
    >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 40.0]))
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def quantiles(values: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """Quantiles along the last axis, linear interpolation: ``(..., N) -> (len(q), ...)``."""
    values = values.to(torch.float64)
    return torch.quantile(values, torch.tensor(q, dtype=values.dtype, device=values.device), dim=-1)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    below = (values[None, :] < values[:, None]).sum(1).to(torch.float64)
    equal = (values[None, :] == values[:, None]).sum(1).to(torch.float64)
    return below + (equal + 1) / 2


def _significant(values: torch.Tensor, digits: int = 6) -> torch.Tensor:
    """``values`` rounded to ``digits`` significant digits of their largest magnitude."""
    scale = values.abs().max()
    return values if scale == 0 else torch.round(values / scale * 10**digits)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two 1-D tensors; ``None`` when undefined.

    Undefined means fewer than 3 values, a non-finite value, or a constant side. Values are
    compared to 6 significant digits, so differences at round-off level are ties: an exactly
    equivariant model (ρ = 1 and E = 1 up to round-off) has no correlation to report.
    """
    if x.numel() < 3 or not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return None
    rx, ry = _ranks(_significant(x.double())), _ranks(_significant(y.double()))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = (rx.pow(2).sum() * ry.pow(2).sum()).sqrt()
    if scale == 0:
        return None
    return float((rx * ry).sum() / scale)


def coherence_ratio(influence: torch.Tensor, identity_index: int) -> torch.Tensor:
    """``ρ(g) = median_n I_n(g) / median_n I_n(e)`` from ``I`` ``(K, N)`` -> ``(K,)`` float64."""
    medians = quantiles(influence, [0.5])[0]
    return medians / medians[identity_index]


def summarize(
    normalized: torch.Tensor,
    elements: Sequence[str],
    identity_index: int,
    group_name: str,
    prefix: str = "",
    equivariance: torch.Tensor | None = None,
) -> dict[str, float]:
    """The DESIGN §3.3 dictionary (see the module docstring) from normalized ``Ĥ`` ``(K, N, N)``."""
    num = normalized.shape[-1]
    influence = normalized.diagonal(dim1=-2, dim2=-1)
    stats = quantiles(influence, [0.5, 0.25, 0.75])
    ratio = coherence_ratio(influence, identity_index)
    out: dict[str, float] = {}
    for k, element in enumerate(elements):
        for j, label in enumerate(("median", "q1", "q3")):
            out[f"{prefix}influence/{group_name}/{element}/{label}"] = float(stats[j, k])
    for k, element in enumerate(elements):
        out[f"{prefix}coherence/{group_name}/ratio/{element}"] = float(ratio[k])
    others = [k for k in range(len(elements)) if k != identity_index]
    rest = ratio[others] if others else ratio[[identity_index]]
    out[f"{prefix}coherence/{group_name}/orbit"] = float(rest.mean())
    out[f"{prefix}basin/{group_name}/compatibility"] = float(rest.min())
    off = ~torch.eye(num, dtype=torch.bool, device=normalized.device)
    pairs = normalized[:, off]
    baseline = (
        quantiles(pairs.reshape(-1), [0.5])[0] if pairs.numel() else torch.tensor(float("nan"))
    )
    out[f"{prefix}baseline/{group_name}/offdiag_median"] = float(
        baseline / stats[0, identity_index]
    )
    if equivariance is not None:
        if tuple(equivariance.shape) != tuple(influence.shape):
            raise ValueError(
                f"equivariance must be the (K, N) = {tuple(influence.shape)} tensor of "
                f"equivariance_error over the same elements {list(elements)}, got shape "
                f"{tuple(equivariance.shape)}"
            )
        errors = quantiles(equivariance, [0.5, 0.75])
        for k, element in enumerate(elements):
            out[f"{prefix}equivariance/{group_name}/{element}/median"] = float(errors[0, k])
            out[f"{prefix}equivariance/{group_name}/{element}/q3"] = float(errors[1, k])
        # ranks of log E equal ranks of E (log is increasing), and E = 0 stays rankable
        corr = spearman(ratio[others], errors[0, others])
        if corr is not None:
            out[f"{prefix}basin/{group_name}/influence_error_rank_corr"] = corr
    return out


__all__ = ["coherence_ratio", "quantiles", "spearman", "summarize"]
