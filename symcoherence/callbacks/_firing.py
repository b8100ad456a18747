"""One firing of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`: measure, agree, gather.

Each rank measures its share of the group elements with
:func:`symcoherence.coherence.measure`; the ranks then agree on success (a failure or a non-finite
value on any rank fails the firing everywhere) and gather the shares. The share depends on the
metric:

* element-separable metrics (``Metric.element_separable``, e.g. ``identity``, ``adam``, the
  probe-batch Gauss–Newton reference): the elements are split across ranks in contiguous shares
  and the shares are gathered and concatenated in element order;
* other metrics (e.g. Gauss–Newton ``subspace``, whose Galerkin basis is built from all the bra
  gradients): every rank measures all elements, on the same parameters and probe set, so every
  rank holds the whole result and nothing is gathered.

Every rank enters every collective, whatever happened on it, so no rank waits forever.

Example:
    >>> from symcoherence.callbacks._firing import share
    >>> from symcoherence.coherence import Identity, GaussNewton
    >>> share(["e", "r", "r2"], Identity(), rank=1, world_size=2)
    ['r2']
    >>> share(["e", "r", "r2"], GaussNewton(solver="subspace"), rank=1, world_size=2)
    ['e', 'r', 'r2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn

from symcoherence.callbacks import _distributed as distributed
from symcoherence.callbacks import _sharded as sharded
from symcoherence.coherence import LossFn, Measurement, MeasurementSpec, Metric, measure


class MeasurementError(RuntimeError):
    """A firing failed on at least one rank and ``on_error="raise"`` was requested."""


@dataclasses.dataclass
class Outcome:
    """The result of a firing on this rank.

    Attributes:
        result: the whole measurement when every rank succeeded, else ``None``.
        messages: per rank, the reason it failed (``None`` where it succeeded); empty on success.
        error: this rank's exception, if it raised one.
    """

    result: Measurement | None
    messages: list[str | None]
    error: BaseException | None

    def report(self, group: str, step: int, on_error: str) -> None:
        """Warn that the firing at ``step`` was skipped, or raise :class:`MeasurementError`."""
        details = "; ".join(f"rank {r}: {m}" for r, m in enumerate(self.messages) if m is not None)
        text = f"OrbitCoherenceMonitor ({group}) could not measure at step {step}: {details}"
        if on_error == "raise":
            raise MeasurementError(text) from self.error
        rank_zero_warn(
            f"{text}. Nothing was logged for this step; training goes on (on_error='raise' stops "
            "instead)"
        )


def share(elements: Sequence[str], metric: Metric, rank: int, world_size: int) -> list[str]:
    """The elements ``rank`` measures.

    Its contiguous share of ``elements`` for an element-separable metric, else all of them.
    """
    if metric.element_separable:
        return distributed.split_evenly(elements, rank, world_size)
    return list(elements)


def measure_collectively(
    work: Callable[[list[str], Metric], Measurement],
    elements: Sequence[str],
    resolve: Callable[[], Metric],
    device: torch.device | str,
    replicated: bool = False,
) -> Outcome:
    """Run ``work(share, metric)`` on this rank's share, agree on success and gather the shares.

    Every rank must call it at the same point: it enters collectives, also after a failure.

    Args:
        work: measures the given elements with the given metric.
        elements: all elements of the firing, identity first.
        resolve: returns the firing's metric object (may raise, e.g. ``adam`` without optimizer).
        device: where the agreement's tensor lives (a CUDA device for the NCCL backend).
        replicated: every rank measures every element (the measurement itself is collective,
            as on a sharded model), so nothing is split or gathered.
    """
    rank, world_size = distributed.rank_and_world_size()
    part: Measurement | None = None
    error: BaseException | None = None
    separable = not replicated
    try:
        metric = resolve()
        separable = separable and metric.element_separable
        mine = list(elements) if replicated else share(elements, metric, rank, world_size)
        part = work(mine, metric).cpu() if mine else None
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
    parts = distributed.all_gather_objects(part) if separable else [part]
    return Outcome(Measurement.concatenate([p for p in parts if p is not None]), [], None)


def measure_run(
    pl_module: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    spec: MeasurementSpec,
    probe: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn | None,
    eval_mode: bool,
) -> Outcome:
    """One firing of a monitor on every rank: :func:`measure_collectively` of the run's model.

    A model sharded with FSDP2 is measured on its gathered plain replica (see
    :mod:`~symcoherence.callbacks._sharded`), so the numbers are those of the unsharded model;
    with a projection, on the sharded model itself (every rank runs the whole measurement, see
    :mod:`~symcoherence.coherence.gradients.sharded`), so that no rank gathers the parameters.

    Args:
        pl_module: the LightningModule (its ``backbone``, else itself, is measured).
        optimizers: the trainer's optimizers (the first one serves ``metric="adam"``); isolation
            guards their state.
        spec: the completed measurement settings.
        probe: ``(inputs, targets)`` of the probe set.
        loss_fn: the per-sample loss overriding the module's, or ``None``.
        eval_mode: measure in eval mode.
    """
    from symcoherence.callbacks._isolation import isolated
    from symcoherence.callbacks._probes import find_loss, measured_model

    optimizer = optimizers[0] if optimizers else None
    inputs, targets = probe
    model = measured_model(pl_module)
    is_sharded = sharded.is_sharded(model)
    in_place = is_sharded and spec.projection is not None
    if is_sharded:
        sharded.check_data_parallel(model)
    if is_sharded and not in_place:
        # every rank gathers the same tensors in the same order, before anything can fail
        replica = sharded.plain_replica(model)
        if optimizer is not None and spec.metric == "adam":
            optimizer = sharded.GatheredOptimizer(optimizer, model, replica)
        model = replica.eval() if eval_mode else replica

    def resolve() -> Metric:
        if spec.metric == "adam" and optimizer is None:
            raise ValueError("metric='adam' reads the training optimizer, but the trainer has none")
        return spec.resolved_metric(optimizer)

    def work(elements: list[str], metric: Metric) -> Measurement:
        with isolated(pl_module, optimizers, eval_mode):
            return measure(
                model,
                find_loss(pl_module, loss_fn),
                inputs,
                targets,
                dataclasses.replace(spec, metric=metric),
                elements=elements,
            )

    device = next(iter(model.parameters())).device
    return measure_collectively(work, spec.measured_elements, resolve, device, in_place)
