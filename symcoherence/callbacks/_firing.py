"""One firing of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`: compute, agree, gather.

Each rank measures its share of the group elements with the engine of
:mod:`symcoherence.coherence`; the ranks then agree on success (a failure or a non-finite value on
any rank fails the firing everywhere) and gather the shares. The share depends on the metric:

* element-separable metrics (``Metric.element_separable``, e.g. ``identity``, ``adam``,
  Gauss–Newton with ``cg``): the elements are split across ranks in contiguous shares and the
  shares are gathered and concatenated in element order;
* other metrics (e.g. Gauss–Newton with ``subspace``, whose Galerkin basis is built from all the
  bra gradients): every rank measures all elements, on the same parameters and probe set, so every
  rank holds the whole result and nothing is gathered.

Every rank enters every collective, whatever happened on it, so no rank waits forever.

Example:
    >>> from symcoherence.callbacks._firing import share
    >>> from symcoherence.coherence import GaussNewton
    >>> share(["e", "r", "r2"], GaussNewton(solver="cg"), rank=1, world_size=2)
    ['r2']
    >>> share(["e", "r", "r2"], GaussNewton(solver="subspace"), rank=1, world_size=2)
    ['e', 'r', 'r2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from symcoherence.callbacks import _distributed as distributed
from symcoherence.callbacks._probes import LossFn
from symcoherence.coherence import (
    OrbitInfluence,
    equivariance_error,
    orbit_influence,
    resolve_metric,
    rollout_equivariance_error,
)
from symcoherence.coherence.metrics import Metric
from symcoherence.groups import FieldType, Group


@dataclasses.dataclass
class Part:
    """What one rank measured for its elements (tensors on the CPU, so every backend pickles them).

    Attributes:
        influence: the orbit influence of the rank's elements (``None`` for an empty share).
        equivariance: ``(K, N)`` forward equivariance errors, when requested.
        rollout: ``(K, N)`` rollout equivariance errors, when requested.
    """

    influence: OrbitInfluence | None = None
    equivariance: torch.Tensor | None = None
    rollout: torch.Tensor | None = None

    def non_finite(self) -> list[str]:
        """Names of the results holding NaN or Inf."""
        bad = [
            name
            for name in ("equivariance", "rollout")
            if getattr(self, name) is not None
            and not bool(torch.isfinite(getattr(self, name)).all())
        ]
        if self.influence is not None and not bool(torch.isfinite(self.influence.matrix).all()):
            bad.append("influence matrix")
        return bad

    @classmethod
    def merge(cls, parts: Sequence[Part]) -> Part:
        """One part from the parts of disjoint, ordered element shares (empty shares skipped)."""
        present = [p for p in parts if p.influence is not None]

        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in present]
            return None if values[0] is None else torch.cat(values)

        return cls(
            OrbitInfluence.concatenate([p.influence for p in present]),
            joined("equivariance"),
            joined("rollout"),
        )


@dataclasses.dataclass
class Outcome:
    """The result of a firing on this rank.

    Attributes:
        result: the whole measurement when every rank succeeded, else ``None``.
        messages: per rank, the reason it failed (``None`` where it succeeded); empty on success.
        error: this rank's exception, if it raised one.
    """

    result: Part | None
    messages: list[str | None]
    error: BaseException | None


def share(elements: Sequence[str], metric: Metric, rank: int, world_size: int) -> list[str]:
    """The elements ``rank`` measures.

    Its contiguous share of ``elements`` for an element-separable metric, else all of them.
    """
    if metric.element_separable:
        return distributed.split_evenly(elements, rank, world_size)
    return list(elements)


def firing_metric(metric: str | Metric, optimizer: torch.optim.Optimizer | None) -> Metric:
    """The metric object of a firing; ``"adam"`` reads the training optimizer."""
    if metric == "adam" and optimizer is None:
        raise ValueError("metric='adam' reads the training optimizer, but the trainer has none")
    return resolve_metric(metric, optimizer)


def compute(
    model: nn.Module,
    loss_fn: LossFn,
    probe: tuple[torch.Tensor, torch.Tensor],
    group: Group,
    elements: Sequence[str],
    metric: Metric,
    *,
    field_type: FieldType,
    target_field_type: FieldType,
    normalization: str,
    chunk_size: int | str | None,
    equivariance: bool,
    rollout_steps: int,
) -> Part:
    """Measure ``elements`` with the engine: influence, and the requested equivariance errors."""
    if not elements:
        return Part()
    inputs, targets = probe
    types = {"field_type": field_type, "target_field_type": target_field_type}
    part = Part(
        _to_cpu(
            orbit_influence(
                model,
                loss_fn,
                inputs,
                targets,
                group,
                elements=elements,
                metric=metric,
                normalization=normalization,
                chunk_size=chunk_size,
                **types,
            )
        )
    )
    if equivariance:
        part.equivariance = equivariance_error(
            model, loss_fn, inputs, targets, group, elements=elements, **types
        ).cpu()
    if rollout_steps:
        part.rollout = rollout_equivariance_error(
            model, loss_fn, inputs, group, field_type, steps=rollout_steps, elements=elements
        ).cpu()
    return part


def measure_collectively(
    work: Callable[[list[str], Metric], Part],
    elements: Sequence[str],
    metric: str | Metric,
    optimizer: torch.optim.Optimizer | None,
    device: torch.device | str,
) -> Outcome:
    """Run ``work(share, metric)`` on this rank's share, agree on success and gather the shares.

    Every rank must call it at the same point: it enters collectives, also after a failure.

    Args:
        work: measures the given elements with the given metric (see :func:`compute`).
        elements: all elements of the firing, identity first.
        metric: the monitor's metric (a shorthand or a ``Metric``).
        optimizer: the training optimizer, for ``"adam"``.
        device: where the agreement's tensor lives (a CUDA device for the NCCL backend).
    """
    rank, world_size = distributed.rank_and_world_size()
    part: Part | None = None
    error: BaseException | None = None
    separable = True
    try:
        resolved = firing_metric(metric, optimizer)
        separable = resolved.element_separable
        part = work(share(elements, resolved, rank, world_size), resolved)
    except Exception as err:  # every failure must reach the agreement below
        error = err
    message = None if error is None else f"{type(error).__name__}: {error}"
    bad = [] if part is None else part.non_finite()
    if message is None and bad:
        message = (
            f"non-finite values (NaN or Inf) in {bad}, from gradients or losses on the probe set"
        )
    if not distributed.all_ranks_agree(message is None, device=device):
        return Outcome(None, distributed.all_gather_objects(message), error)
    assert part is not None
    parts = distributed.all_gather_objects(part) if separable else [part]
    return Outcome(Part.merge(parts), [], None)


def _to_cpu(result: OrbitInfluence) -> OrbitInfluence:
    """The same result with its tensors on the CPU (picklable by every process-group backend)."""
    by_module = (
        None if result.by_module is None else {k: v.cpu() for k, v in result.by_module.items()}
    )
    return dataclasses.replace(
        result,
        matrix=result.matrix.cpu(),
        bra_self=result.bra_self.cpu(),
        ket_self=result.ket_self.cpu(),
        by_module=by_module,
    )
