r"""``measure``: the one measurement path of symcoherence.

Given a model, its per-sample loss, a probe set ``(x_n, y_n)`` and a
:class:`~symcoherence.coherence.MeasurementSpec`, :func:`measure` computes

* the orbit influence ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m`` (:func:`~symcoherence.coherence.orbit_influence`),
* the forward equivariance error ``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)`` when asked,
* the rollout equivariance error when asked,

and returns a :class:`Measurement` whose :meth:`~Measurement.summary` holds every statistic with
its interval. The callback, ``symcoherence analyze`` and scripts all call it, so the same settings
give the same numbers everywhere.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.coherence import MeasurementSpec, measure
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular").double()
    >>> x, y = torch.randn(6, 1, 8, 8).double(), torch.randn(6, 1, 8, 8).double()
    >>> spec = MeasurementSpec(group=sc.groups.Shifts(line=("x", [1, 2])), field_type=["scalar"])
    >>> result = measure(net, sc.smse, x, y, spec)
    >>> [round(row.ratio, 6) for row in result.summary()]   # circular convolution: equivariant
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from symcoherence.coherence.equivariance import equivariance_error, rollout_equivariance_error
from symcoherence.coherence.gradients.parameters import LossFn
from symcoherence.coherence.influence import orbit_influence
from symcoherence.coherence.result import OrbitInfluence
from symcoherence.coherence.spec import MeasurementSpec
from symcoherence.coherence.statistics.decision import DecisionRule
from symcoherence.coherence.statistics.summary import Summary


@dataclass
class Measurement:
    """What one measurement found (tensors may live on any device; :meth:`cpu` moves them).

    Attributes:
        influence: the orbit influence of the measured elements.
        equivariance: ``(K, N)`` forward equivariance errors, or ``None``.
        rollout: ``(K, N)`` rollout equivariance errors, or ``None``.
        rollout_steps: the rollout's length.
        seconds: wall time of the measurement.
        confidence: level of the summary's bootstrap intervals.
        resamples: bootstrap resamples.
        seed: seed of the bootstrap and permutation test.
        rule: when an element is reported as suppressed.
    """

    influence: OrbitInfluence
    equivariance: torch.Tensor | None = None
    rollout: torch.Tensor | None = None
    rollout_steps: int = 0
    seconds: float = 0.0
    confidence: float = 0.9
    resamples: int = 1000
    seed: int = 0
    rule: DecisionRule = dataclasses.field(default_factory=DecisionRule)

    @property
    def elements(self) -> tuple[str, ...]:
        """The measured element names."""
        return self.influence.elements

    @cached_property
    def _summary(self) -> Summary:
        summary = self.influence.summarize(
            self.equivariance,
            rollout=self.rollout,
            rollout_steps=self.rollout_steps,
            confidence=self.confidence,
            resamples=self.resamples,
            seed=self.seed,
            rule=self.rule,
        )
        return dataclasses.replace(summary, health={**summary.health, "seconds": self.seconds})

    def summary(self) -> Summary:
        """Every statistic with its interval (computed once)."""
        return self._summary

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """The finite statistics under their logged key names."""
        return self._summary.scalars(prefix)

    def non_finite(self) -> list[str]:
        """Names of the raw results holding NaN or Inf."""
        bad = [
            name
            for name in ("equivariance", "rollout")
            if getattr(self, name) is not None
            and not bool(torch.isfinite(getattr(self, name)).all())
        ]
        if not bool(torch.isfinite(self.influence.matrix).all()):
            bad.append("influence matrix")
        return bad

    def cpu(self) -> Measurement:
        """The same measurement with its tensors on the CPU (picklable by every backend)."""
        result = self.influence
        by_module = (
            None if result.by_module is None else {k: v.cpu() for k, v in result.by_module.items()}
        )
        influence = dataclasses.replace(
            result,
            matrix=result.matrix.cpu(),
            bra_self=result.bra_self.cpu(),
            ket_self=result.ket_self.cpu(),
            bra_norm=result.bra_norm.cpu(),
            equivariance=result.equivariance.cpu(),
            by_module=by_module,
        )
        return dataclasses.replace(
            self,
            influence=influence,
            equivariance=None if self.equivariance is None else self.equivariance.cpu(),
            rollout=None if self.rollout is None else self.rollout.cpu(),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Measurement]) -> Measurement:
        """One measurement from parts for disjoint, ordered element subsets (same probes)."""
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate needs at least one Measurement")

        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values)

        return dataclasses.replace(
            parts[0],
            influence=OrbitInfluence.concatenate([p.influence for p in parts]),
            equivariance=joined("equivariance"),
            rollout=joined("rollout"),
            seconds=max(p.seconds for p in parts),
        )


def measure(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    spec: MeasurementSpec,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    elements: Sequence[str] | None = None,
) -> Measurement:
    """Measure ``model`` on the probes with the settings of ``spec`` (see the module docstring).

    Args:
        model: maps ``(B, C, H, W)`` inputs to predictions shaped like the targets; measured in the
            modes it is in (put it in eval mode first for inference behaviour).
        loss_fn: per-sample loss on unbatched tensors (e.g. :func:`~symcoherence.coherence.smse`).
        inputs: probe states ``(N, C, H, W)``.
        targets: next states ``(N, C', H, W)``.
        spec: a complete :class:`~symcoherence.coherence.MeasurementSpec`.
        optimizer: the training optimizer (read by ``metric="adam"``).
        elements: measure only these of ``spec.measured_elements`` (a share of a distributed
            firing, for element-separable metrics); default all.

    Returns:
        :class:`Measurement`.

    Raises:
        ValueError: for an incomplete spec, data that do not match the field types, gradients that
            are all zero, or the errors of :func:`~symcoherence.coherence.orbit_influence`.
    """
    if not isinstance(spec, MeasurementSpec):
        raise TypeError(f"spec must be a MeasurementSpec, got {type(spec).__name__}")
    spec = spec.complete()
    names = spec.measured_elements if elements is None else tuple(elements)
    start = time.perf_counter()
    types = {"field_type": spec.field_type, "target_field_type": spec.output_field_type}
    influence = orbit_influence(
        model,
        loss_fn,
        inputs,
        targets,
        spec.group,
        elements=names,
        metric=spec.resolved_metric(optimizer),
        normalization=spec.normalization,
        chunk_size=spec.chunk_size,
        parameter_filter=spec.parameter_filter,
        projection=spec.projection,
        max_memory=spec.max_memory,
        **types,
    )
    result = Measurement(
        influence,
        rollout_steps=spec.rollout_steps,
        confidence=spec.confidence,
        resamples=spec.resamples,
        seed=spec.seed,
        rule=spec.rule,
    )
    if spec.equivariance:
        # the gradient passes recorded every loss E needs, unless a metric skipped some bras
        skipped = bool(torch.isnan(influence.bra_norm).any())
        result.equivariance = (
            equivariance_error(model, loss_fn, inputs, targets, spec.group, elements=names, **types)
            if skipped
            else influence.equivariance
        )
    if spec.rollout_steps:
        result.rollout = rollout_equivariance_error(
            model,
            loss_fn,
            inputs,
            spec.group,
            spec.field_type,
            steps=spec.rollout_steps,
            elements=names,
        )
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["Measurement", "measure"]
