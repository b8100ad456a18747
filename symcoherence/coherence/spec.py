r"""``MeasurementSpec``: every setting of a measurement, validated once.

The callback, the ``analyze`` command and scripts build one spec and hand it to
:func:`~symcoherence.coherence.measure`, so the same settings give the same numbers everywhere.
Shorthands resolve here and only here: a group name (``"D4"``), a list of field kinds
(``["vector"]``) and the metric names ``"identity"``, ``"adam"`` (the training optimizer's
geometry) and ``"gauss_newton"`` (the reference :class:`~symcoherence.coherence.GaussNewton`).

A spec may leave ``group`` and ``field_type`` open (``None``) while a caller such as the callback
waits for the data to declare them; :meth:`MeasurementSpec.complete` fills them in and checks the
result again.

Example:
    >>> from symcoherence.coherence import MeasurementSpec
    >>> spec = MeasurementSpec(group="D4", field_type=["pseudoscalar"], elements=["r", "s"])
    >>> spec.measured_elements
    ('e', 'r', 's')
    >>> MeasurementSpec(group="D4", field_type=["vector"], normalization="z-score")
    Traceback (most recent call last):
    ...
    ValueError: unknown normalization 'z-score'; expected one of ['standard', 'cosine', 'none']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from symcoherence.coherence.gradients.chunking import ChunkSize
from symcoherence.coherence.gradients.memory import (
    DEFAULT_MEMORY_FRACTION,
    MemoryLimit,
    check_max_memory,
)
from symcoherence.coherence.gradients.parameters import ParameterFilter
from symcoherence.coherence.gradients.projection import Projection
from symcoherence.coherence.metrics.base import Metric
from symcoherence.coherence.metrics.diagonal import Adam, Identity, check_projectable
from symcoherence.coherence.metrics.gauss_newton import GaussNewton
from symcoherence.coherence.statistics.decision import DecisionRule
from symcoherence.coherence.statistics.normalization import check_normalization
from symcoherence.groups import FieldType, Group, resolve_group

METRIC_NAMES = ("identity", "adam", "gauss_newton")  # the shorthands resolve_metric accepts


def resolve_metric(metric: str | Metric, optimizer: torch.optim.Optimizer | None = None) -> Metric:
    """A :class:`~symcoherence.coherence.Metric` from a shorthand or a metric object.

    Args:
        metric: ``"identity"``, ``"adam"`` (needs ``optimizer``), ``"gauss_newton"`` (the
            reference :class:`~symcoherence.coherence.GaussNewton` with its defaults) or a
            ``Metric``.
        optimizer: the training optimizer, for ``"adam"``.

    Example:
        >>> resolve_metric("identity")
        Identity()
    """
    if isinstance(metric, Metric):
        return metric
    check_metric(metric)
    if metric == "identity":
        return Identity()
    if metric == "gauss_newton":
        return GaussNewton()
    if optimizer is None:
        raise ValueError(
            "metric='adam' reads the training optimizer's second moments, but no optimizer was "
            "given: pass optimizer=... (or metric=Adam(optimizer)); a checkpoint must hold the "
            "optimizer state"
        )
    return Adam(optimizer)


def check_metric(metric: Any) -> None:
    """Raise ``ValueError`` unless ``metric`` is a shorthand of :data:`METRIC_NAMES` or a Metric."""
    if not (isinstance(metric, Metric) or metric in METRIC_NAMES):
        raise ValueError(
            f"unknown metric {metric!r}; expected one of {list(METRIC_NAMES)} or a "
            "symcoherence.coherence.Metric object such as GaussNewton(solver='subspace')"
        )


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class MeasurementSpec:
    """The settings of one orbit-influence measurement.

    Args:
        group: a :class:`~symcoherence.groups.Group`, a name (``"D4"``, ``"C4"``), a group spec or
            its JSON; ``None`` leaves it open (see :meth:`complete`).
        field_type: field type of the inputs (a ``FieldType`` or a list of kinds); ``None`` leaves
            it open.
        target_field_type: field type of the targets (default: ``field_type``).
        elements: element names to measure (default: all); the identity is always measured, first.
        metric: ``"identity"``, ``"adam"``, ``"gauss_newton"`` or a
            :class:`~symcoherence.coherence.Metric`.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"``.
        chunk_size: per-sample gradient chunking (``"auto"``, a positive int or ``None``).
        parameter_filter: which parameters span ``θ`` (``None``: all trainable).
        equivariance: also measure the forward equivariance error ``E_n(g)``.
        rollout_steps: if positive, also the equivariance error of a rollout of this length.
        confidence: level of the bootstrap intervals, in ``(0, 1)``.
        resamples: bootstrap resamples (at least 100).
        seed: seed of the bootstrap and of the permutation test.
        rule: when an element is reported as suppressed (a
            :class:`~symcoherence.coherence.statistics.decision.DecisionRule`; default: the distribution
            transfer's interval lies below 0.5).
        projection: measure on seeded random projections of the gradients (a
            :class:`~symcoherence.coherence.Projection`; for large models, diagonal metrics
            only), or ``None`` for the exact engine.
        max_memory: memory budget of the gradient chunks: bytes (an int) or a fraction in (0, 1]
            of the device's free memory when the measurement starts (a float; default 0.25,
            see :mod:`~symcoherence.coherence.gradients.memory`). ``chunk_size="auto"`` takes the
            largest chunk within it; a measurement that does not fit one sample at a time fails.

    Raises:
        ValueError, TypeError: for any invalid setting, with the fix in the message.
    """

    group: Group | str | dict | None = None
    field_type: FieldType | Sequence[str] | None = None
    target_field_type: FieldType | Sequence[str] | None = None
    elements: Sequence[str] | None = None
    metric: str | Metric = "identity"
    normalization: str = "standard"
    chunk_size: ChunkSize = "auto"
    parameter_filter: ParameterFilter = None
    equivariance: bool = True
    rollout_steps: int = 0
    confidence: float = 0.9
    resamples: int = 1000
    seed: int = 0
    rule: DecisionRule = DecisionRule()
    projection: Projection | None = None
    max_memory: MemoryLimit = DEFAULT_MEMORY_FRACTION

    def __post_init__(self) -> None:
        def settle(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        settle("group", resolve_group(self.group))
        if self.field_type is not None:
            settle("field_type", FieldType.coerce(self.field_type, "field_type"))
        if self.target_field_type is not None:
            settle(
                "target_field_type", FieldType.coerce(self.target_field_type, "target_field_type")
            )
        if self.elements is not None:
            if isinstance(self.elements, str) or not self.elements:
                raise ValueError(
                    f"elements must be a non-empty list of element names such as ['e', 'r'], "
                    f"got {self.elements!r}"
                )
            settle("elements", tuple(self.elements))
            if len(set(self.elements)) != len(self.elements):
                raise ValueError(f"elements must be distinct, got {list(self.elements)}")
        if self.group is not None:
            for element in self.elements or ():
                self.group.check_element(element)
        check_metric(self.metric)
        check_normalization(self.normalization)
        if not (
            self.chunk_size in ("auto", None)
            or (isinstance(self.chunk_size, int) and not isinstance(self.chunk_size, bool))
            and self.chunk_size > 0
        ):
            raise ValueError(
                f"chunk_size must be 'auto', None or a positive integer, got {self.chunk_size!r}"
            )
        if self.projection is not None:
            if not isinstance(self.projection, Projection):
                raise TypeError(
                    "projection must be a symcoherence.coherence.Projection (e.g. "
                    f"Projection(dim=65536, seed=0)) or None, got {self.projection!r}"
                )
            check_projectable(self.metric)
        check_max_memory(self.max_memory)
        _check_positive_int(self.rollout_steps, "rollout_steps", minimum=0)
        _check_positive_int(self.resamples, "resamples", minimum=100)
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), e.g. 0.9, got {self.confidence!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        settle("equivariance", bool(self.equivariance))
        if not isinstance(self.rule, DecisionRule):
            raise TypeError(f"rule must be a DecisionRule, got {type(self.rule).__name__}")

    # ------------------------------------------------------------------ completion
    @property
    def is_complete(self) -> bool:
        """Whether group and field type are known."""
        return self.group is not None and self.field_type is not None

    def complete(
        self,
        group: Group | str | dict | None = None,
        field_type: FieldType | Sequence[str] | None = None,
        target_field_type: FieldType | Sequence[str] | None = None,
    ) -> MeasurementSpec:
        """This spec with open settings filled from the given defaults (given settings win).

        Raises:
            ValueError: if group or field type is still open afterwards.
        """
        filled = dataclasses.replace(
            self,
            group=self.group if self.group is not None else group,
            field_type=self.field_type if self.field_type is not None else field_type,
            target_field_type=(
                self.target_field_type if self.target_field_type is not None else target_field_type
            ),
        )
        if filled.group is None:
            raise ValueError(
                "the measurement has no group: pass group=... (e.g. 'D4' or "
                "symcoherence.groups.D4()) or use data that declare a diagnostic_group"
            )
        if filled.field_type is None:
            raise ValueError(
                "the measurement needs the input field type: pass field_type=... (e.g. "
                "FieldType(['pseudoscalar'])) or use data that declare a field_type"
            )
        return filled

    # ------------------------------------------------------------------ derived settings
    @property
    def measured_elements(self) -> tuple[str, ...]:
        """The identity first, then ``elements`` (default: all of the group)."""
        if self.group is None:
            raise ValueError("the group is still open: call complete(group=...) first")
        chosen = self.group.elements if self.elements is None else self.elements
        return (self.group.identity, *(e for e in chosen if e != self.group.identity))

    @property
    def output_field_type(self) -> FieldType:
        """``target_field_type``, defaulting to ``field_type``."""
        return self.field_type if self.target_field_type is None else self.target_field_type

    def resolved_metric(self, optimizer: torch.optim.Optimizer | None = None) -> Metric:
        """The metric object (``"adam"`` reads ``optimizer``)."""
        return resolve_metric(self.metric, optimizer)

    @property
    def metric_name(self) -> str:
        """A readable name of the metric, with the solver settings of a metric object."""
        return self.metric if isinstance(self.metric, str) else repr(self.metric)

    def record(self) -> dict[str, Any]:
        """Plain settings for hparams, JSON reports and figure titles."""
        return {
            "group": None if self.group is None else self.group.name,
            "elements": list(self.measured_elements) if self.group is not None else None,
            "metric": self.metric_name,
            "normalization": self.normalization,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "rollout_steps": self.rollout_steps,
            "rule": self.rule.describe(),
            "projection": None if self.projection is None else dataclasses.asdict(self.projection),
            "max_memory": self.max_memory,
        }


__all__ = ["METRIC_NAMES", "MeasurementSpec", "check_metric", "resolve_metric"]
