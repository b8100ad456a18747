r"""The structured summary of one measurement, and the logged scalars derived from it.

With ``I_n(g) = Ĥ^g[n, n]`` the normalized diagonal (``K × N``), ``z_n(g)`` the specific coupling,
``t_n(g)`` the transfer per unit gradient (:mod:`symcoherence.coherence.statistics.per_probe`) and ``e`` the
identity, per element ``g``:

* influence: median, q1, q3 over probes of ``I_n(g)`` and a bootstrap interval of the median;
* **coherence ratio** ``ρ(g) = median_n I_n(g) / median_n I_n(e)`` with its interval (the paper's
  statistic; dominated by the gradient direction all probes share, so read it beside the
  baseline);
* **random-pair baseline**: ``median_{n≠m} Ĥ^g[n, m] / median_n I_n(e)``, the ``ρ`` statistic on
  unrelated pairs of the same element; a ``ρ(g)`` at or below it says nothing orbit-specific;
* **specific coupling** ``median_n z_n(g)`` with its interval, on its own scale (never a ratio to
  ``z(e)``, which the probe-batch Gauss–Newton metric inflates);
* **distribution transfer** ``τ(g) = median_n t_n(g) / median_n t_n(e)`` with its interval;
* forward error ``E_n(g)``: median (with interval) and q3; the rollout error's median and q3.

Each element ``g ≠ e`` is also flagged **suppressed** or not by a
:class:`~symcoherence.coherence.statistics.decision.DecisionRule` on one statistic's interval.

Across elements: the paper's **orbit coherence** ``mean_{g≠e} ρ(g)``; **basin compatibility**
``min_{g≠e} s(g)`` of the decision rule's statistic ``s`` (the distribution transfer ``τ`` by
default; not ``ρ``, which separated failing elements from healthy ones in no controlled test)
with the paired bootstrap interval of that minimum and the number of elements the rule flags
(both ``1`` when the identity is the only element); and the rank correlation
of ``ρ(g)`` with ``|log E(g)|`` at q3 over ``g ≠ e`` with its permutation p-value (omitted when
undefined; over the 7 non-identity elements of D4, ``|r| > 0.79`` is needed for ``p < 0.05``).

Medians skip degenerate (NaN) probes. A statistic that cannot be formed is NaN in the structured
summary and left out of :meth:`Summary.scalars`.

Example:
    >>> import torch
    >>> from symcoherence.coherence import OrbitInfluence
    >>> h = torch.eye(3).repeat(2, 1, 1) * torch.tensor([2.0, 1.0])[:, None, None] + 1.0
    >>> result = OrbitInfluence(h, torch.ones(2, 3), torch.ones(3), ("e", "r"), "C2", "none")
    >>> summary = result.summarize()
    >>> summary.element("r").ratio, summary.orbit
    (0.6666666666666666, 0.6666666666666666)
    >>> summary.rule.statistic, summary.suppressed_count  # compatibility is min τ(g), g ≠ e
    ('transfer', 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch

from symcoherence.coherence.statistics.decision import DecisionRule
from symcoherence.coherence.statistics.keys import Keys
from symcoherence.coherence.statistics.per_probe import quantiles
from symcoherence.coherence.statistics.resampling import (
    bootstrap_interval,
    resampled_medians,
    spearman,
)

NAN = float("nan")


@dataclass(frozen=True)
class ElementSummary:
    """Every per-element statistic of one measurement (NaN where not formed).

    ``*_lo`` / ``*_hi`` are bootstrap interval bounds of the statistic before them.
    """

    element: str
    influence_median: float
    influence_q1: float
    influence_q3: float
    influence_lo: float
    influence_hi: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    baseline: float
    coupling: float
    coupling_lo: float
    coupling_hi: float
    transfer: float
    transfer_lo: float
    transfer_hi: float
    equivariance_median: float = NAN
    equivariance_q3: float = NAN
    equivariance_lo: float = NAN
    equivariance_hi: float = NAN
    rollout_median: float = NAN
    rollout_q3: float = NAN


@dataclass(frozen=True)
class Summary:
    """The summary of one measurement over a group's elements.

    Attributes:
        group: the group's short name.
        identity: the identity element's name.
        elements: one :class:`ElementSummary` per element, identity first when measured.
        orbit: the paper's orbit coherence ``mean_{g≠e} ρ(g)``.
        compatibility: basin compatibility ``min_{g≠e} s(g)`` of the rule's statistic ``s``.
        baseline: the random-pair statistic over all elements.
        rank_corr: Spearman of ``ρ`` vs ``|log E|`` (q3), or ``None``.
        rank_corr_pvalue: its permutation p-value, or ``None``.
        rollout_steps: length of the rollout behind ``rollout_*`` (0: none).
        health: measurement health: degenerate rows, zero gradients, solver damping and residual,
            seconds.
        confidence: level of the intervals.
        rule: the decision rule (its statistic defines ``compatibility``).
        compatibility_lo: lower bound of the bootstrap interval of ``compatibility``.
        compatibility_hi: its upper bound.
    """

    group: str
    identity: str
    elements: tuple[ElementSummary, ...]
    orbit: float
    compatibility: float
    baseline: float
    rank_corr: float | None = None
    rank_corr_pvalue: float | None = None
    rollout_steps: int = 0
    health: Mapping[str, float] = field(default_factory=dict)
    confidence: float = 0.9
    rule: DecisionRule = field(default_factory=DecisionRule)
    compatibility_lo: float = NAN
    compatibility_hi: float = NAN

    @property
    def suppressed_count(self) -> int:
        """How many elements :attr:`rule` flags."""
        return sum(1 for flagged in self.suppressed.values() if flagged)

    @property
    def suppressed(self) -> dict[str, bool | None]:
        """Per element ``g ≠ e``: flagged by :attr:`rule` (``None`` where undefined)."""
        return {
            row.element: self.rule.suppressed(row)
            for row in self.elements
            if row.element != self.identity
        }

    def element(self, name: str) -> ElementSummary:
        """The summary of element ``name``."""
        for row in self.elements:
            if row.element == name:
                return row
        raise KeyError(f"no element {name!r}; this summary has {[r.element for r in self]}")

    def __iter__(self) -> Iterator[ElementSummary]:
        return iter(self.elements)

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """The finite statistics under their logged key names (:mod:`.keys`).

        The intervals of the influence and equivariance medians are left to the structured
        summary (figures, reports); every statistic of the verdict keeps its interval.
        """
        keys = Keys(self.group, prefix)
        out: dict[str, float | None] = {}
        for row in self.elements:
            g = row.element
            for stat, value in (
                ("median", row.influence_median),
                ("q1", row.influence_q1),
                ("q3", row.influence_q3),
            ):
                out[keys.influence(g, stat)] = value
            for bound, suffix in (("", ""), ("lo", "_lo"), ("hi", "_hi")):
                out[keys.ratio(g, bound)] = getattr(row, f"ratio{suffix}")
                out[keys.coupling(g, bound)] = getattr(row, f"coupling{suffix}")
                out[keys.transfer(g, bound)] = getattr(row, f"transfer{suffix}")
            out[keys.baseline(g)] = row.baseline
            for stat, value in (("median", row.equivariance_median), ("q3", row.equivariance_q3)):
                out[keys.equivariance(g, stat)] = value
            if self.rollout_steps:
                out[keys.rollout(self.rollout_steps, g, "median")] = row.rollout_median
                out[keys.rollout(self.rollout_steps, g, "q3")] = row.rollout_q3
        for element, flagged in self.suppressed.items():
            out[keys.suppressed(element)] = None if flagged is None else float(flagged)
        out[keys.orbit()] = self.orbit
        out[keys.compatibility()] = self.compatibility
        out[keys.compatibility("lo")] = self.compatibility_lo
        out[keys.compatibility("hi")] = self.compatibility_hi
        out[keys.suppressed_count()] = float(self.suppressed_count)
        out[keys.baseline()] = self.baseline
        out[keys.rank_corr()] = self.rank_corr
        out[keys.rank_corr(pvalue=True)] = self.rank_corr_pvalue
        for name, value in self.health.items():
            out[keys.measurement(name)] = value
        return {
            key: float(value)
            for key, value in out.items()
            if value is not None and math.isfinite(value)
        }

    def verdict(self) -> str:
        """One line: the elements the decision rule flags, and the worst ratio against its baseline."""
        others = [row for row in self.elements if row.element != self.identity]
        if not others:
            return f"{self.group}: only the identity was measured"
        flagged = [name for name, value in self.suppressed.items() if value]
        worst = min(others, key=lambda row: row.ratio if math.isfinite(row.ratio) else math.inf)
        relation = "above" if worst.ratio_lo > worst.baseline else "not above"
        found = f"suppressed: {', '.join(flagged)}" if flagged else "no element suppressed"
        return (
            f"{self.group}: {found} ({self.rule.describe()}); basin compatibility "
            f"{self.compatibility:.3g} [{self.compatibility_lo:.3g}, {self.compatibility_hi:.3g}]; "
            f"the paper's lowest ratio "
            f"ρ({worst.element}) = {worst.ratio:.3g} [{worst.ratio_lo:.3g}, {worst.ratio_hi:.3g}] "
            f"is {relation} its random-pair baseline {worst.baseline:.3g}"
        )


def _medians_with_interval(
    values: torch.Tensor, interval: dict, identity: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Medians over probes of ``values`` ``(K, N)`` (divided by the identity's when given)."""

    def statistic(indices: torch.Tensor) -> torch.Tensor:
        medians = resampled_medians(values, indices)
        return medians if identity is None else medians / medians[identity]

    medians = quantiles(values, [0.5])[0]
    point = medians if identity is None else medians / medians[identity]
    lower, upper = bootstrap_interval(statistic, values.shape[-1], **interval)
    return point, lower, upper


def _compatibility(
    values: dict[str, torch.Tensor],
    statistic: str,
    identity: int,
    others: list[int],
    interval: dict,
) -> tuple[float, float, float]:
    """``min_{g≠e}`` of the rule's statistic with the paired bootstrap interval of the minimum.

    ``ratio`` and ``transfer`` are medians over probes divided by the identity's; ``coupling`` is
    a median on its own scale. With the identity alone it is ``1`` (nothing to be incompatible).
    """
    if not others:
        return 1.0, 1.0, 1.0
    per_probe = values[statistic].to(torch.float64)
    divide = statistic != "coupling"

    def minimum(indices: torch.Tensor | None) -> torch.Tensor:
        medians = (
            quantiles(per_probe, [0.5])[0]
            if indices is None
            else resampled_medians(per_probe, indices)
        )
        if divide:
            medians = medians / medians[identity]
        return medians[others].min(0).values

    lower, upper = bootstrap_interval(minimum, per_probe.shape[-1], **interval)
    return float(minimum(None)), float(lower), float(upper)


def summarize(
    normalized: torch.Tensor,
    coupling: torch.Tensor,
    transfer: torch.Tensor,
    *,
    elements: tuple[str, ...],
    identity_index: int,
    group_name: str,
    equivariance: torch.Tensor | None = None,
    rollout: torch.Tensor | None = None,
    rollout_steps: int = 0,
    health: Mapping[str, float] | None = None,
    confidence: float = 0.9,
    resamples: int = 1000,
    seed: int = 0,
    rule: DecisionRule | None = None,
) -> Summary:
    """Build the :class:`Summary` (definitions in the module docstring).

    Args:
        normalized: normalized ``Ĥ`` ``(K, N, N)``.
        coupling: specific coupling ``z`` ``(K, N)``.
        transfer: transfer per unit gradient ``t`` ``(K, N)``.
        elements: the ``K`` element names.
        identity_index: position of the identity in ``elements``.
        group_name: the group's short name.
        equivariance: forward errors ``E`` ``(K, N)``, or ``None``.
        rollout: rollout equivariance errors ``(K, N)``, or ``None``.
        rollout_steps: the rollout's length.
        health: measurement-health entries to carry.
        confidence: level of the bootstrap intervals.
        resamples: bootstrap resamples.
        seed: seed of the bootstrap draws.
        rule: when an element is reported as suppressed (default :class:`DecisionRule`).
    """
    shape = tuple(normalized.shape[:2])
    for name, value in (("equivariance", equivariance), ("rollout", rollout)):
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(
                f"{name} must be (K, N) = {shape} over the same elements {list(elements)}, got "
                f"shape {tuple(value.shape)}"
            )
    interval = {"confidence": confidence, "resamples": resamples, "seed": seed}
    influence = normalized.diagonal(dim1=-2, dim2=-1).to(torch.float64).cpu()
    q1, q3 = quantiles(influence, [0.25, 0.75])
    median, median_lo, median_hi = _medians_with_interval(influence, interval)
    ratio, ratio_lo, ratio_hi = _medians_with_interval(influence, interval, identity_index)
    coupled, coupled_lo, coupled_hi = _medians_with_interval(coupling.cpu(), interval)
    moved, moved_lo, moved_hi = _medians_with_interval(transfer.cpu(), interval, identity_index)
    num = normalized.shape[-1]
    off = ~torch.eye(num, dtype=torch.bool)
    pairs = normalized.to(torch.float64).cpu()[:, off]  # (K, N(N-1))
    identity_median = median[identity_index]
    if pairs.shape[-1]:
        per_element = quantiles(pairs, [0.5])[0] / identity_median
        overall = float(quantiles(pairs.reshape(-1), [0.5])[0] / identity_median)
    else:
        per_element, overall = torch.full((len(elements),), NAN), NAN
    rows = {
        "influence_median": median,
        "influence_q1": q1,
        "influence_q3": q3,
        "influence_lo": median_lo,
        "influence_hi": median_hi,
        "ratio": ratio,
        "ratio_lo": ratio_lo,
        "ratio_hi": ratio_hi,
        "baseline": per_element,
        "coupling": coupled,
        "coupling_lo": coupled_lo,
        "coupling_hi": coupled_hi,
        "transfer": moved,
        "transfer_lo": moved_lo,
        "transfer_hi": moved_hi,
    }
    rank_corr = None
    others = [k for k in range(len(elements)) if k != identity_index]
    if equivariance is not None:
        errors = equivariance.to(torch.float64).cpu()
        rows["equivariance_median"], rows["equivariance_lo"], rows["equivariance_hi"] = (
            _medians_with_interval(errors, interval)
        )
        rows["equivariance_q3"] = quantiles(errors, [0.75])[0]
        rank_corr = spearman(ratio[others], rows["equivariance_q3"][others].log().abs(), seed=seed)
    if rollout is not None:
        rows["rollout_median"], rows["rollout_q3"] = quantiles(rollout.cpu(), [0.5, 0.75])
    summaries = tuple(
        ElementSummary(element, **{name: float(values[k]) for name, values in rows.items()})
        for k, element in enumerate(elements)
    )
    rule = rule or DecisionRule()
    rest = ratio[others] if others else ratio[[identity_index]]
    compatibility = _compatibility(
        {"ratio": influence, "coupling": coupling.cpu(), "transfer": transfer.cpu()},
        rule.statistic,
        identity_index,
        others,
        interval,
    )
    return Summary(
        group=group_name,
        identity=elements[identity_index],
        elements=summaries,
        orbit=float(rest.mean()),
        compatibility=compatibility[0],
        compatibility_lo=compatibility[1],
        compatibility_hi=compatibility[2],
        baseline=overall,
        rank_corr=None if rank_corr is None else rank_corr[0],
        rank_corr_pvalue=None if rank_corr is None else rank_corr[1],
        rollout_steps=rollout_steps if rollout is not None else 0,
        health=dict(health or {}),
        confidence=confidence,
        rule=rule,
    )


__all__ = ["ElementSummary", "Summary", "summarize"]
