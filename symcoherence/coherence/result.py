r"""``OrbitInfluence``: the raw parts of an orbit-influence measurement and everything derived from them.

The result holds only raw quantities (``H``, the self-overlaps, element names), so that results
computed for disjoint element subsets — e.g. on different distributed ranks — can be gathered and
rebuilt with :meth:`OrbitInfluence.concatenate`; normalizations and summaries are derived on demand.

Example:
    >>> import torch
    >>> from symcoherence.coherence import OrbitInfluence
    >>> h = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]]])
    >>> result = OrbitInfluence(h, torch.ones(2, 2), torch.ones(2), ("e", "r"), "C2", "none")
    >>> result.ratio
    tensor([1.0000, 0.5000], dtype=torch.float64)
    >>> result.summary()["coherence/C2/orbit"]
    0.5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import torch

from symcoherence.coherence.statistics.decision import DecisionRule
from symcoherence.coherence.statistics.keys import HEALTH
from symcoherence.coherence.statistics.normalization import check_normalization, normalize
from symcoherence.coherence.statistics.per_probe import quantiles, specific_coupling, unit_transfer
from symcoherence.coherence.statistics.summary import Summary, summarize


@dataclass
class OrbitInfluence:
    r"""Orbit influence over elements ``g_1..g_K`` and ``N`` probe samples.

    Attributes:
        matrix: raw ``H`` ``(K, N, N)``, ``matrix[k, n, m] = (b_n^{g_k})ᵀ M⁻¹ a_m``; positive means
            a step on ``x_m`` lowers the loss at ``g_k·x_n``.
        bra_self: ``(K, N)``, ``(b_n^g)ᵀ M⁻¹ b_n^g``; NaN where not computed
            (``GaussNewton(solver="cg")`` computes it only for ``normalization="cosine"``).
        ket_self: ``(N,)``, ``a_mᵀ M⁻¹ a_m``.
        elements: the ``K`` element names, in the order of the first axis.
        group_name: the group's short name (used in summary keys).
        normalization: ``"standard"`` (rows divided by their standard deviation over ``m``),
            ``"cosine"`` or ``"none"`` (see :mod:`symcoherence.coherence.statistics.normalization`).
        identity: name of the identity element (needed by summaries and ratios).
        metric: name of the metric ``M``.
        info: solver diagnostics (e.g. ``cg_iterations``, ``cg_relative_residual``).
        by_module: for diagonal metrics when asked, ``{module: (K, N, N)}`` raw parts summing
            exactly to ``matrix``.
        bra_norm: ``(K, N)`` Euclidean norms ``‖b_n^g‖`` (NaN where not recorded); they turn the
            mean off-diagonal influence into the transfer per unit gradient.
        equivariance: ``(K, N)`` forward equivariance errors
            ``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)`` from the per-sample losses that
            the gradient passes computed on the way (NaN where not recorded; see
            :func:`~symcoherence.coherence.equivariance_error`).

    Vanishing gradients: a probe whose gradient is zero has zero raw influence; its normalized row
    is NaN (a degenerate row, counted by :attr:`degenerate_rows`) and summaries skip it. A ratio
    whose identity median is zero is NaN.
    """

    matrix: torch.Tensor
    bra_self: torch.Tensor
    ket_self: torch.Tensor
    elements: tuple[str, ...]
    group_name: str
    normalization: str = "standard"
    identity: str = "e"
    metric: str = "identity"
    info: dict[str, Any] = field(default_factory=dict)
    by_module: dict[str, torch.Tensor] | None = None
    bra_norm: torch.Tensor | None = None
    equivariance: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.elements = tuple(self.elements)
        if self.bra_norm is None:
            self.bra_norm = torch.full_like(self.bra_self, float("nan"))
        if self.equivariance is None:
            self.equivariance = torch.full_like(self.bra_self, float("nan"))
        if self.matrix.dim() != 3 or self.matrix.shape[1] != self.matrix.shape[2]:
            raise ValueError(f"matrix must be (K, N, N), got shape {tuple(self.matrix.shape)}")
        k, n = self.matrix.shape[:2]
        if len(self.elements) != k or len(set(self.elements)) != k:
            raise ValueError(
                f"need {k} distinct element names for a matrix of shape {tuple(self.matrix.shape)}, "
                f"got {list(self.elements)}"
            )
        shapes = (
            tuple(self.bra_self.shape),
            tuple(self.bra_norm.shape),
            tuple(self.equivariance.shape),
            tuple(self.ket_self.shape),
        )
        if shapes != ((k, n), (k, n), (k, n), (n,)):
            raise ValueError(
                f"bra_self, bra_norm and equivariance must be (K, N) = {(k, n)} and ket_self "
                f"(N,) = {(n,)}, got {shapes[0]}, {shapes[1]}, {shapes[2]} and {shapes[3]}"
            )
        check_normalization(self.normalization)

    # ------------------------------------------------------------------ derived quantities
    @property
    def normalized(self) -> torch.Tensor:
        """Normalized ``Ĥ`` ``(K, N, N)`` under :attr:`normalization`."""
        return normalize(self.matrix, self.bra_self, self.ket_self, self.normalization)

    @property
    def influence(self) -> torch.Tensor:
        """Per-sample diagonal influence ``I_n(g) = Ĥ^g[n, n]`` ``(K, N)``."""
        return self.normalized.diagonal(dim1=-2, dim2=-1)

    def _identity_index(self) -> int:
        if self.identity not in self.elements:
            raise ValueError(
                f"ratios and summaries divide by the identity element {self.identity!r}, which this "
                f"result lacks (elements {list(self.elements)}); include it in elements=... or "
                "concatenate the part that holds it"
            )
        return self.elements.index(self.identity)

    @property
    def ratio(self) -> torch.Tensor:
        """Coherence ratio ``ρ(g) = median_n I_n(g) / median_n I_n(e)`` ``(K,)`` float64."""
        medians = quantiles(self.influence, [0.5])[0]
        return medians / medians[self._identity_index()]

    @property
    def coupling(self) -> torch.Tensor:
        """Specific coupling ``z_n(g)`` ``(K, N)`` (see :mod:`.statistics`)."""
        return specific_coupling(self.matrix)

    @property
    def transfer(self) -> torch.Tensor:
        """Transfer per unit gradient ``t_n(g)`` ``(K, N)`` (see :mod:`.statistics`)."""
        return unit_transfer(self.matrix, self.bra_norm)

    @property
    def zero_gradients(self) -> int:
        """Number of bras ``b_n^g`` whose gradient is exactly zero."""
        return int((self.bra_norm == 0).sum())

    @property
    def degenerate_rows(self) -> int:
        """Rows ``(g, n)`` without a normalized value: no spread, or no gradient."""
        empty = torch.isnan(self.normalized).all(dim=-1) | (self.bra_norm == 0)
        return int(empty.sum())

    def health(self) -> dict[str, float]:
        """Measurement health: degenerate rows, zero gradients, solver record, memory and chunk.

        The memory entries are the budget in bytes (``memory_budget``) and the largest gradient
        chunk taken (``chunk_size``).
        """
        entries = {
            "degenerate_rows": float(self.degenerate_rows),
            "zero_gradients": float(self.zero_gradients),
        }
        for name in HEALTH:
            value = self.info.get(name)
            if name not in entries and isinstance(value, Number):
                entries[name] = float(value)
        return entries

    def summarize(
        self,
        equivariance: torch.Tensor | None = None,
        *,
        rollout: torch.Tensor | None = None,
        rollout_steps: int = 0,
        confidence: float = 0.9,
        resamples: int = 1000,
        seed: int = 0,
        rule: DecisionRule | None = None,
    ) -> Summary:
        """The structured :class:`~symcoherence.coherence.statistics.summary.Summary` of this result.

        Args:
            equivariance: forward errors ``E`` ``(K, N)`` over the same elements, or ``None``.
            rollout: rollout equivariance errors ``(K, N)``, or ``None``.
            rollout_steps: the rollout's length.
            confidence: level of the bootstrap intervals.
            resamples: bootstrap resamples.
            seed: seed of the bootstrap draws.
            rule: when an element is reported as suppressed (default: transfer interval < 0.5).
        """
        return summarize(
            self.normalized,
            self.coupling,
            self.transfer,
            elements=self.elements,
            identity_index=self._identity_index(),
            group_name=self.group_name,
            equivariance=equivariance,
            rollout=rollout,
            rollout_steps=rollout_steps,
            health=self.health(),
            confidence=confidence,
            resamples=resamples,
            seed=seed,
            rule=rule,
        )

    def summary(
        self, prefix: str = "", equivariance: torch.Tensor | None = None
    ) -> dict[str, float]:
        """The logged scalars: :meth:`summarize` under the key names of :mod:`.keys`.

        Args:
            prefix: prepended to every key (e.g. ``"val/"``).
            equivariance: optional ``(K, N)`` forward errors from
                :func:`~symcoherence.coherence.equivariance_error` over the same elements, which
                adds the ``equivariance/...`` keys and the influence–error rank correlation.

        Returns:
            ``{key: value}`` for every finite statistic.
        """
        return self.summarize(equivariance).scalars(prefix)

    # ------------------------------------------------------------------ rebuilding
    def with_normalization(self, normalization: str) -> OrbitInfluence:
        """The same raw result under another normalization."""
        return dataclasses.replace(self, normalization=normalization)

    def reorder(self, elements: Sequence[str]) -> OrbitInfluence:
        """Restrict and reorder to ``elements`` (distinct names of this result)."""
        elements = tuple(elements)
        missing = [e for e in elements if e not in self.elements]
        if missing or len(set(elements)) != len(elements) or not elements:
            raise ValueError(
                f"reorder needs distinct names among {list(self.elements)}, got {list(elements)}"
            )
        index = torch.tensor([self.elements.index(e) for e in elements], device=self.matrix.device)
        by_module = None
        if self.by_module is not None:
            by_module = {name: part[index] for name, part in self.by_module.items()}
        return dataclasses.replace(
            self,
            matrix=self.matrix[index],
            bra_self=self.bra_self[index],
            bra_norm=self.bra_norm[index],
            equivariance=self.equivariance[index],
            elements=elements,
            by_module=by_module,
        )

    def _settings(self) -> tuple:
        """What parts must share to be concatenated: group, metric, identity, normalization, N."""
        return (
            self.group_name,
            self.metric,
            self.identity,
            self.normalization,
            tuple(self.matrix.shape[1:]),
        )

    @classmethod
    def concatenate(
        cls, parts: Sequence[OrbitInfluence], elements: Sequence[str] | None = None
    ) -> OrbitInfluence:
        """Rebuild one result from parts computed for disjoint element subsets.

        All parts must share the probe set (hence ``ket_self``, taken from the first part), the
        group, metric, identity and normalization. ``info`` entries are merged; a numeric entry
        present in several parts keeps its largest (worst) value.

        Args:
            parts: the partial results.
            elements: order of the result (default: the parts' elements in order).
        """
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate needs at least one OrbitInfluence")
        first = parts[0]
        theirs = first._settings()
        for part in parts[1:]:
            mine = part._settings()
            if mine != theirs:
                raise ValueError(
                    "parts differ in (group, metric, identity, normalization, (N, N)): "
                    f"{theirs} vs {mine}; only results for the same probe set and settings combine"
                )
        names = [e for part in parts for e in part.elements]
        if len(set(names)) != len(names):
            raise ValueError(f"parts must hold disjoint elements, got {names}")
        info: dict[str, Any] = {}
        for part in parts:
            for key, value in part.info.items():
                old = info.get(key)
                both_numbers = isinstance(value, Number) and isinstance(old, Number)
                info[key] = max(old, value) if both_numbers else info.get(key, value)
        by_module = None
        if all(part.by_module is not None for part in parts):
            by_module = {
                name: torch.cat([part.by_module[name] for part in parts])
                for name in first.by_module
            }
        whole = dataclasses.replace(
            first,
            matrix=torch.cat([part.matrix for part in parts]),
            bra_self=torch.cat([part.bra_self for part in parts]),
            bra_norm=torch.cat([part.bra_norm for part in parts]),
            equivariance=torch.cat([part.equivariance for part in parts]),
            elements=tuple(names),
            info=info,
            by_module=by_module,
        )
        return whole if elements is None else whole.reorder(elements)


__all__ = ["OrbitInfluence"]
