"""``OrbitCoherenceMonitor``: the Lightning callback that logs orbit influence while training runs.

Glue only: its state, resume, and the Lightning hooks that ask the pure parts (``_schedule``,
``_budget``, ``_timeline``) whether and what to fire and log; the other private modules of this
package draw the probes, measure and write to TensorBoard. With ``metric="adam"`` and no optimizer
state yet (a fresh run) there are no second moments to read, so the start firing moves to the end
of the first step.

The class is longer than this package's other definitions because it carries the callback's
thirty documented arguments and their settings; what happens at a firing is in the private
modules.

Example:
    >>> from symcoherence.callbacks import OrbitCoherenceMonitor
    >>> monitor = OrbitCoherenceMonitor(group="D4", early_schedule=64)
    >>> monitor.state_key
    "OrbitCoherenceMonitor{'group': 'D4', 'prefix': ''}"
    >>> monitor.schedule.early.steps
    (0, 1, 2, 4, 8, 16, 32, 64)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from symcoherence.callbacks import _tensorboard as tensorboard
from symcoherence.callbacks._augmentation import check_transform, draw_probes
from symcoherence.callbacks._budget import OverheadBudget
from symcoherence.callbacks._distributed import all_ranks_max
from symcoherence.callbacks._firing import measure_run
from symcoherence.callbacks._isolation import isolated
from symcoherence.callbacks._probes import (
    BatchItems,
    check_batch_items,
    check_configuration,
    declared_defaults,
    measured_model,
)
from symcoherence.callbacks._schedule import EarlySchedule, FiringSchedule, as_early_schedule
from symcoherence.callbacks._settings import (
    check_resumed_probe,
    check_run,
    check_settings,
    configuring,
)
from symcoherence.callbacks._timeline import Timeline
from symcoherence.callbacks._verdict import describe_probes, verdict_text
from symcoherence.coherence import (
    Adam,
    DecisionRule,
    Keys,
    LossFn,
    Measurement,
    MeasurementSpec,
    Metric,
    Projection,
)
from symcoherence.coherence.gradients.memory import DEFAULT_MEMORY_FRACTION, resolve_memory_budget
from symcoherence.groups import FieldType, Group


class OrbitCoherenceMonitor(Callback):
    """Log orbit influence, its statistics with intervals, the verdict and forward equivariance errors.

    Add it to any ``Trainer``. The model differentiated is ``pl_module.backbone`` when the module
    has one, else ``pl_module``; the per-sample loss ``loss_fn(pred, target) -> scalar`` (one
    unbatched sample) is ``loss_fn`` if given, else ``pl_module.loss_fn``, else
    :func:`symcoherence.smse`. Probes come from the datamodule's ``probe_batch(n, split, seed)``,
    else from the ``probe_split`` dataset of the dataloaders. Each firing measures with
    :func:`symcoherence.coherence.measure` and :attr:`spec`, as ``symcoherence analyze`` does.

    Scalars (:class:`~symcoherence.coherence.Keys`, e.g. ``basin/D4/compatibility``, the minimum
    of the rule's statistic, ``basin/D4/suppressed``, the number of flagged elements,
    ``coherence/D4/transfer/r`` with ``…_lo`` and ``…_hi``, ``coherence/D4/suppressed/r``, and the
    run's losses at the firing under ``basin/D4/loss/…``) go to every logger at
    ``trainer.global_step`` and to ``trainer.callback_metrics``. The verdict's :attr:`timeline` (checkpointed) adds, for each
    element the decision rule has flagged, ``coherence/{G}/first_flagged/{g}`` (the step of the
    first flag), ``…/flag_held/{g}`` (1 while every firing since flagged it again) and, while the
    flag stands, ``…/flagged_since/{g}``. A TensorBoard logger also gets the verdict in words
    (*Text* tab, ``verdict/{G}``), figures, histograms, a custom-scalars layout and hparams. Under
    DDP every rank computes the same summary (rank 0 logs it) and a failure on any rank skips the
    firing everywhere (``on_error="warn"``) or raises :class:`MeasurementError`. Sharded training
    is refused at ``setup``.

    Args:
        group: a :class:`~symcoherence.groups.Group`, a name (``"D4"``), a spec or its JSON;
            ``None``/``"default"``: the datamodule's ``diagnostic_group`` (or ``symmetry_group``).
        elements: element names to measure (default: all); the identity is always included.
        metric: ``"identity"``, ``"adam"`` (the training optimizer's second moments),
            ``"gauss_newton"`` or a :class:`~symcoherence.coherence.Metric`.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"``.
        at_start: measure once before the first optimizer step, on the initialized (or resumed)
            model: the preflight reading.
        early_schedule: dense firings early in training, outside the overhead budget: a last step
            ``T`` (steps ``0, 1, 2, 4, …, ≤ T``: about ``2 + log2 T`` firings), a list of steps or
            an :class:`~symcoherence.callbacks.EarlySchedule`; ``None`` (default): none.
        every_n_train_steps, every_n_epochs: measure after every n-th optimizer step / at the end
            of every n-th epoch, under the budget (``None``: never).
        probe_size: number ``N`` of probe pairs (at least 3).
        probe_split: ``"val"`` (does learning from data like these reach ``g·x``?), ``"train"``
            (through the training augmentation: will *this* run learn ``g``?) or ``"test"``.
        probe_seed: seed of the probe draw and of its augmentation (the global RNG is not used).
        probe_transform: ``"auto"`` (for ``probe_split="train"``: the datamodule's
            ``augment(inputs, targets, generator)``, else one element of its ``augment_group``
            per probe), ``None``, or a function ``(inputs, targets, generator) -> (inputs,
            targets)`` applied to any split.
        rule: the decision rule that flags elements (default ``DecisionRule("transfer", 0.5)``).
        equivariance: also log forward equivariance errors ``E_n(g)``.
        rollout_steps: if positive, also log the equivariance error of a rollout of this length.
        log_figures: write the figure and heatmap to TensorBoard (histograms are always written).
        chunk_size: per-sample gradient chunking (``"auto"``, a positive int, ``None``).
        on_error: ``"warn"`` (skip the firing, training goes on) or ``"raise"``.
        prefix: prepended to every logged key.
        loss_fn: per-sample loss overriding ``pl_module.loss_fn``.
        field_type, target_field_type: field types of inputs and targets (default: the
            datamodule's; the target's defaults to the input's).
        eval_mode: measure in eval mode (default); ``False`` keeps the model's modes and refuses
            batch norm or dropout in training mode.
        confidence, resamples: level and resamples of the bootstrap intervals.
        batch_items: the ``(input, target)`` items of a dataset sample: a pair of keys or indices
            (default ``(0, 1)``) or a function ``sample -> (input, target)``.
        max_overhead: the share of training time budgeted firings may take (default 5 %): after
            a firing of ``c`` seconds the next waits ``ceil(c / (max_overhead × seconds per
            step))`` steps (``measurement/{G}/interval_steps``, ``…/overhead``); ``None``: no
            budget.
        projection: measure on seeded random projections of the per-sample gradients (e.g.
            ``Projection(dim=2**20, seed=0)``); identity and Adam metrics only. Under FSDP2 a
            projection measures the sharded model in place, without gathering it.
        max_memory: the memory a firing's gradient chunks may take: bytes (an int), or a fraction
            of what the device has free (a float, default 0.25; CPU: ``MemAvailable``, CUDA: free
            memory less what training takes back at its peak), resolved at the first firing
            after a training step and kept; ``chunk_size="auto"`` takes the largest chunk within
            it (``measurement/{G}/memory_budget``, ``…/chunk_size``).

    Raises:
        ValueError, TypeError: for invalid arguments (at construction), and (as
            :class:`ConfigurationError`) for settings that do not fit the run (at ``setup`` /
            ``on_train_start``).
    """

    def __init__(
        self,
        group: Group | str | dict | None = None,
        *,
        elements: Sequence[str] | None = None,
        metric: str | Metric = "identity",
        normalization: str = "standard",
        at_start: bool = True,
        early_schedule: EarlySchedule | int | Sequence[int] | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = 1,
        probe_size: int = 48,
        probe_split: str = "val",
        probe_seed: int = 0,
        probe_transform: str | Callable | None = "auto",
        rule: DecisionRule | None = None,
        equivariance: bool = True,
        rollout_steps: int = 0,
        log_figures: bool = True,
        chunk_size: int | str | None = "auto",
        on_error: str = "warn",
        prefix: str = "",
        loss_fn: LossFn | None = None,
        field_type: FieldType | Sequence[str] | None = None,
        target_field_type: FieldType | Sequence[str] | None = None,
        eval_mode: bool = True,
        confidence: float = 0.9,
        resamples: int = 1000,
        batch_items: BatchItems = (0, 1),
        max_overhead: float | None = 0.05,
        projection: Projection | None = None,
        max_memory: int | float = DEFAULT_MEMORY_FRACTION,
    ):
        self.spec = MeasurementSpec(
            group=None if group == "default" else group,
            field_type=field_type,
            target_field_type=target_field_type,
            elements=elements,
            metric=metric,
            normalization=normalization,
            chunk_size=chunk_size,
            equivariance=equivariance,
            rollout_steps=rollout_steps,
            confidence=confidence,
            resamples=resamples,
            projection=projection,
            max_memory=max_memory,
            rule=DecisionRule() if rule is None else rule,
        )
        check_settings(
            every_n_train_steps=every_n_train_steps,
            every_n_epochs=every_n_epochs,
            at_start=at_start,
            early_schedule=early_schedule,
            probe_size=probe_size,
            probe_split=probe_split,
            probe_seed=probe_seed,
            on_error=on_error,
            prefix=prefix,
            loss_fn=loss_fn,
        )
        check_transform(probe_transform)
        check_batch_items(batch_items)
        self.schedule = FiringSchedule(
            at_start, as_early_schedule(early_schedule), every_n_train_steps, every_n_epochs
        )
        self.probe_size, self.probe_split, self.probe_seed = probe_size, probe_split, probe_seed
        self.probe_transform = probe_transform
        self.log_figures = bool(log_figures)
        self.on_error = on_error
        self.prefix = prefix
        self.loss_fn = loss_fn
        self.eval_mode = bool(eval_mode)
        self.batch_items = batch_items
        self.budget = OverheadBudget(max_overhead)
        self.timeline = Timeline()
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._probe_identity: dict[str, Any] | None = None
        self._restored_identity: dict[str, Any] | None = None
        self._last_step = -1
        self._start = "done"  # "pending" from on_train_start until the start firing ran
        self._view: tensorboard.TensorBoardView | None = None
        self._state_key: tuple[tuple[str, str] | None, str] = (None, "")

    # ------------------------------------------------------------------ identity and state
    @property
    def group(self) -> Group | None:
        """The measured group (``None`` until resolved from the datamodule at ``setup``)."""
        return self.spec.group

    @property
    def keys(self) -> Keys:
        """The key builder of this monitor's group and prefix."""
        if self.group is None:
            raise ValueError("the group is not known yet: it is resolved at setup from the data")
        return Keys(self.group.name, self.prefix)

    @property
    def state_key(self) -> str:
        """Distinct per group and prefix, so several monitors coexist in one checkpoint.

        Lightning reads it at every hook call, so it is cached until the group or prefix changes
        (the group of ``group=None`` is resolved at ``setup``).
        """
        identity = (self.group.name if self.group is not None else "datamodule", self.prefix)
        if self._state_key[0] != identity:
            group, prefix = identity
            self._state_key = (identity, self._generate_state_key(group=group, prefix=prefix))
        return self._state_key[1]

    def state_dict(self) -> dict[str, Any]:
        """Schedule position (with the budget's next allowed step), probe identity, timeline."""
        return {
            "last_step": self._last_step,
            "probe": self._probe_identity,
            "budget": self.budget.state_dict(),
            "timeline": self.timeline.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the schedule and timeline; the probe set is checked against the stored identity."""
        self._last_step = int(state_dict["last_step"])
        self._restored_identity = state_dict.get("probe")
        self.budget.load_state_dict(state_dict.get("budget", {}))
        self.timeline.load_state_dict(state_dict.get("timeline", {}))
        if self._probe_identity is not None:
            check_resumed_probe(self._restored_identity, self._probe_identity)

    # ------------------------------------------------------------------ setup and checks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Complete the measurement's group and field types from the datamodule's declarations."""
        with configuring():
            self._setup(trainer, pl_module, stage)

    def _setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.spec = self.spec.complete(**declared_defaults(trainer.datamodule))
        check_run(trainer, self.spec)
        if self._view is None or self._view.keys != self.keys:
            self._view = tensorboard.TensorBoardView(self.keys)
        writer = tensorboard.find_tensorboard_writer(trainer.loggers)
        if stage == "fit" and writer is not None and trainer.is_global_zero:
            hparams = getattr(pl_module, "hparams", {})
            self._view.hparams(writer, hparams, self.spec.record(), self.probe_size)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw the probe set and check it against field types, group and model (first chance)."""
        self._prepare(trainer, pl_module)
        self.budget.agree = lambda interval: all_ranks_max(interval, device=pl_module.device)
        self.budget.start(trainer.global_step)
        self._start = "pending"

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._probe is not None:
            return
        if not self.spec.is_complete:
            self.setup(trainer, pl_module, "fit")
        with isolated(pl_module, trainer.optimizers, self.eval_mode), configuring():
            inputs, targets, identity = draw_probes(
                trainer.datamodule,
                pl_module,
                self.probe_size,
                self.probe_split,
                self.probe_seed,
                field_type=self.spec.field_type,
                target_field_type=self.spec.output_field_type,
                transform=self.probe_transform,
                trainer=trainer,
                batch_items=self.batch_items,
            )
            check_configuration(self.spec, measured_model(pl_module), inputs, targets)
        self._probe = (inputs, targets)
        self._probe_identity = identity
        if self._restored_identity is not None:
            check_resumed_probe(self._restored_identity, identity)

    # ------------------------------------------------------------------ schedule
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """The start firing: before the first optimizer step of this fit."""
        if self._start != "pending":
            return
        self._start = "done"
        if not self.schedule.at_fit_start(trainer.global_step, self._last_step):
            return
        metric, optimizers = self.spec.metric, trainer.optimizers
        if (
            (metric == "adam" or isinstance(metric, Adam))
            and optimizers
            and not optimizers[0].state
        ):
            self._start = "after first step"  # Adam has no second moments before its first step
            return
        self._fire(trainer, pl_module, budgeted=False)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Early, deferred-start and every-n-steps firings after the optimizer step just taken."""
        step, deferred = trainer.global_step, self._start == "after first step"
        if deferred and step > 0 and step != self._last_step:
            self._start = "done"
            self._fire(trainer, pl_module, budgeted=False)
        elif (kind := self.schedule.after_step(step, self._last_step)) is not None:
            self._fire(trainer, pl_module, budgeted=kind == "budgeted")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure at the end of every n-th epoch (unless this step was just measured)."""
        if self.schedule.at_epoch_end(trainer.current_epoch, trainer.global_step, self._last_step):
            self._fire(trainer, pl_module, budgeted=True)

    def _fire(self, trainer: Trainer, pl_module: LightningModule, budgeted: bool) -> None:
        """Fire (``budgeted``: only if the overhead budget allows); the budget records the cost."""
        step = trainer.global_step
        if budgeted and not self.budget.allows(step):
            return
        start = self.budget.clock()
        self.measure(trainer, pl_module)
        interval = self.budget.record(step, self.budget.clock() - start)
        if self.budget.max_overhead is None or self.group is None:
            return
        extra = {self.keys.measurement("interval_steps"): float(interval)}
        if math.isfinite(self.budget.overhead):
            extra[self.keys.measurement("overhead")] = self.budget.overhead
        self._emit(trainer, pl_module, extra)

    @staticmethod
    def _emit(trainer: Trainer, pl_module: LightningModule, scalars: dict[str, float]) -> bool:
        """Scalars to ``callback_metrics`` on every rank and to the loggers on rank 0 (returned).

        ``pl_module.log`` costs about a millisecond per key (its checks and result collection,
        for values that need no reduction); the loggers get the dict in one call and
        ``trainer.callback_metrics`` (what ``ModelCheckpoint`` and ``EarlyStopping`` read) the
        same values as tensors in one update, as ``pl_module.log`` would leave them there.
        """
        callback_metrics = trainer.callback_metrics
        values = torch.tensor(list(scalars.values()), dtype=torch.float32)
        callback_metrics.update(zip(scalars, values.unbind(), strict=True))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
        return trainer.is_global_zero

    # ------------------------------------------------------------------ one measurement
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float] | None:
        """Measure now and log; returns the logged scalars, or ``None`` when the firing was skipped.

        Callable from any Lightning hook (training or validation; inference mode is left for the
        gradient pass). Every rank must call it at the same point: it enters collectives.
        """
        self._last_step = trainer.global_step
        self._prepare(trainer, pl_module)
        spec = self.spec
        if isinstance(spec.max_memory, float):  # a fraction of what is free now, in bytes
            budget = resolve_memory_budget(spec.max_memory, pl_module.device)
            spec = dataclasses.replace(spec, max_memory=budget)
            if trainer.global_step > 0:  # training has reached its own peak: keep it
                self.spec = spec
        outcome = measure_run(
            pl_module, trainer.optimizers, spec, self._probe, self.loss_fn, self.eval_mode
        )
        if outcome.result is None:
            outcome.report(
                self.group.name if self.group else "?", trainer.global_step, self.on_error
            )
            return None
        return self._log(trainer, pl_module, outcome.result)

    def _log(
        self, trainer: Trainer, pl_module: LightningModule, result: Measurement
    ) -> dict[str, float]:
        keys, step, summary = self.keys, trainer.global_step, result.summary()
        self.timeline.update(step, summary.suppressed)
        scalars = result.scalars(self.prefix)
        scalars.update(self.timeline.scalars(keys.group, self.prefix))
        scalars.update(tensorboard.losses(trainer.callback_metrics, keys))
        writer = tensorboard.find_tensorboard_writer(trainer.loggers)
        if self._emit(trainer, pl_module, scalars) and writer is not None:
            record, probes = self.spec.record(), describe_probes(self._probe_identity)
            self._view.firing(
                writer,
                result,
                step,
                figures=self.log_figures,
                title=f"{record['metric']}, {record['normalization']}, N = {probes}, step {step}",
                verdict=verdict_text(summary, step, probes, self.timeline),
            )
        return scalars

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Close the per-element TensorBoard runs."""
        if self._view is not None:
            self._view.close()
