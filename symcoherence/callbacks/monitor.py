"""``OrbitCoherenceMonitor``: the Lightning callback that logs orbit influence while training runs.

Glue only. This module holds the firing schedule, state and resume; the probe set and the checks
are in :mod:`symcoherence.callback_setup`, one firing's measurement and its data-parallel work
sharing in :mod:`symcoherence.callback_measure`, and what a firing logs in
:mod:`symcoherence.callback_logging`. Every number comes from :mod:`symcoherence.coherence`
(``orbit_influence``, ``equivariance_error``, ``OrbitInfluence.summary``).

When parameters are measured:

* by steps: in ``on_train_batch_end`` of the batch whose optimizer step made ``trainer.global_step``
  a multiple of ``every_n_train_steps`` — i.e. the parameters *after* optimizer step
  ``global_step``. Under gradient accumulation ``global_step`` counts optimizer steps, so the
  accumulating batches in between never fire;
* by epochs: in ``on_train_epoch_end`` (after that epoch's validation) of every
  ``every_n_epochs``-th epoch, unless the same ``global_step`` was already measured.

The model is measured in eval mode (dropout off, normalization layers use running statistics)
unless ``eval_mode=False``; autocast is disabled and parameters in half precision are measured on a
float32 copy, so the diagnostic always computes in float32 (or float64 for float64 models).
Scalars are logged at ``step = trainer.global_step``.

Example:
    >>> from symcoherence.callbacks import OrbitCoherenceMonitor
    >>> monitor = OrbitCoherenceMonitor(group="D4", every_n_train_steps=100, every_n_epochs=None)
    >>> monitor.state_key
    "OrbitCoherenceMonitor{'group': 'D4', 'prefix': ''}"
    >>> monitor.spec.measured_elements[:3]
    ('e', 'r', 'r2')
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from symcoherence.callbacks import _tensorboard as tensorboard
from symcoherence.callbacks._budget import OverheadBudget
from symcoherence.callbacks._distributed import all_ranks_max
from symcoherence.callbacks._firing import measure_collectively
from symcoherence.callbacks._isolation import isolated
from symcoherence.callbacks._probes import (
    SPLITS,
    BatchItems,
    check_batch_items,
    check_configuration,
    declared_defaults,
    draw_probe,
    find_loss,
    measured_model,
)
from symcoherence.coherence import (
    Keys,
    LossFn,
    Measurement,
    MeasurementSpec,
    Metric,
    Projection,
    measure,
)
from symcoherence.groups import FieldType, Group


class MeasurementError(RuntimeError):
    """A firing failed on at least one rank and ``on_error="raise"`` was requested."""


class ConfigurationError(ValueError, TypeError):
    """The monitor's settings do not fit the data, model or strategy of the run it was added to.

    Raised at the first hook that sees the run (``setup``, ``on_train_start``), with the fix in the
    message; a ``ValueError`` (and a ``TypeError``, for wrong kinds of data) so that callers can
    catch either.
    """


class OrbitCoherenceMonitor(Callback):
    """Log orbit influence, its statistics with intervals, and forward equivariance errors.

    Add it to any ``Trainer``. The model differentiated is ``pl_module.backbone`` when the module
    has one, else ``pl_module`` itself; the per-sample loss is ``loss_fn`` if given, else
    ``pl_module.loss_fn``, else :func:`symcoherence.smse`. ``loss_fn(pred, target)`` takes one
    unbatched sample and returns a scalar.

    Every firing measures with :func:`symcoherence.coherence.measure` and the monitor's
    :class:`~symcoherence.coherence.MeasurementSpec` (:attr:`spec`), so ``symcoherence analyze``
    with the same settings reports the same numbers. Scalars (e.g. ``coherence/D4/ratio/r`` with
    ``coherence/D4/ratio_lo/r`` and ``…_hi``, ``coherence/D4/coupling/r``,
    ``coherence/D4/transfer/r``, ``baseline/D4/r/offdiag_median``, ``basin/D4/compatibility``,
    ``measurement/D4/degenerate_rows``; see :class:`~symcoherence.coherence.Keys`) go to every
    logger at ``step = trainer.global_step`` and to ``trainer.callback_metrics`` through
    ``pl_module.log(..., logger=False)``, so callbacks such as ``ModelCheckpoint`` can monitor
    them. With a TensorBoard logger the monitor also writes a figure, the influence heatmap and
    histograms per firing, one custom-scalars layout, and the final basin compatibility as an
    hparams metric.

    Under data-parallel training the group elements are split across ranks in contiguous shares
    when the metric allows it (``Metric.element_separable``); the parts are gathered and every
    rank computes the same summary (logged once, by rank 0). For a metric that is not
    element-separable (``GaussNewton(solver="subspace")``, the orbit-batch Gauss–Newton metric)
    every rank measures all elements on the same parameters and probe set, so the values equal a
    single-process measurement. A failure or a non-finite value on any rank makes every rank skip
    the firing with a warning (``on_error="warn"``) or raise :class:`MeasurementError`
    (``on_error="raise"``); the ranks agree through a collective each of them enters.

    Args:
        group: a :class:`~symcoherence.groups.Group`, a name (``"D4"``, ``"C4"``), a group spec
            or its JSON; ``None`` or ``"default"``: the datamodule's ``diagnostic_group`` (else
            its ``symmetry_group``).
        elements: element names to measure (default: all); the identity is always included.
        metric: ``"identity"``, ``"adam"`` (the training optimizer's second moments),
            ``"gauss_newton"`` (the reference Gauss–Newton metric) or a
            :class:`~symcoherence.coherence.Metric`.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"``.
        every_n_train_steps: measure after every n-th optimizer step (``None``: never by steps).
        every_n_epochs: measure at the end of every n-th epoch (``None``: never by epochs).
        probe_size: number ``N`` of probe pairs (at least 3).
        probe_split: where probes come from: ``"val"``, ``"train"`` or ``"test"``.
        probe_seed: seed of the probe draw (the global RNG is not used).
        equivariance: also log forward equivariance errors ``E_n(g)``.
        rollout_steps: if positive, also log the equivariance error of a rollout of this length.
        log_figures: write the figure and heatmap to TensorBoard (histograms are always written).
        chunk_size: per-sample gradient chunking (``"auto"``, a positive int, ``None``).
        on_error: ``"warn"`` (skip the firing, training goes on) or ``"raise"``.
        prefix: prepended to every logged key.
        loss_fn: per-sample loss overriding ``pl_module.loss_fn``.
        field_type: input field type (default: the datamodule's ``field_type``).
        target_field_type: target field type (default: the datamodule's ``target_field_type``,
            else ``field_type``).
        eval_mode: measure with the model in eval mode (default). With ``False`` the model's own
            modes are kept, and batch norm or dropout in training mode are refused.
        confidence: level of the bootstrap intervals.
        resamples: bootstrap resamples.
        batch_items: which items of a dataset sample are ``(input, target)`` when probes are
            drawn from a dataset (no ``probe_batch``): a pair of keys or indices, e.g.
            ``("x", "y")`` for dict samples or ``(0, 1)`` (default) for tuples with extra items,
            or a function ``sample -> (input, target)``.
        max_overhead: the share of training time the monitor may take (default 5 %): after each
            firing the next one waits at least ``ceil(firing seconds / (max_overhead × seconds
            per training step))`` steps, on top of ``every_n_*`` (which stay minimum intervals).
            The interval is logged as ``measurement/{G}/interval_steps`` and the measured share
            as ``measurement/{G}/overhead``; ``None`` fires at every scheduled point.
        projection: measure on seeded random projections of the per-sample gradients, for
            models too large to hold ``N`` exact gradients (e.g.
            ``Projection(dim=2**20, seed=0)``; in YAML ``projection: {dim: 1048576}``). Works with
            the identity and Adam metrics; with Gauss–Newton it is refused at construction. A
            ``dim`` of at least the parameter count reproduces the exact measurement.

    Probes come from the datamodule's ``probe_batch(n, split, seed)`` when it has one, else from
    the ``probe_split`` dataset of the datamodule's or module's dataloader hooks, else from the
    dataloaders given to ``trainer.fit(model, train_dataloaders=..., val_dataloaders=...)``.

    Sharded training (FSDP, DeepSpeed, model parallelism) is refused at ``setup``: per-sample
    gradients need every parameter on one rank.

    Raises:
        ValueError, TypeError: for invalid arguments (at construction) and for a configuration that
            does not match the data, the model or the strategy (at ``setup`` /
            ``on_train_start``).
    """

    def __init__(
        self,
        group: Group | str | dict | None = None,
        *,
        elements: Sequence[str] | None = None,
        metric: str | Metric = "identity",
        normalization: str = "standard",
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = 1,
        probe_size: int = 48,
        probe_split: str = "val",
        probe_seed: int = 0,
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
        )
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self.probe_size = probe_size
        self.probe_split = probe_split
        self.probe_seed = probe_seed
        self.log_figures = bool(log_figures)
        self.on_error = on_error
        self.prefix = prefix
        self.loss_fn = loss_fn
        self._check_schedule()
        self.eval_mode = bool(eval_mode)
        check_batch_items(batch_items)
        self.batch_items = batch_items
        self.budget = OverheadBudget(max_overhead)
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._probe_identity: dict[str, Any] | None = None
        self._restored_identity: dict[str, Any] | None = None
        self._last_step = -1
        self._hparams_written = False
        self._layout_written = False
        self._element_runs: tensorboard.ElementRuns | None = None
        self._state_key: tuple[tuple[str, str] | None, str] = (None, "")

    def _check_schedule(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the fix for an invalid schedule setting."""
        every_n_train_steps, every_n_epochs = self.every_n_train_steps, self.every_n_epochs
        probe_size, probe_split, probe_seed = self.probe_size, self.probe_split, self.probe_seed
        on_error, prefix, loss_fn = self.on_error, self.prefix, self.loss_fn
        for name, value in (
            ("every_n_train_steps", every_n_train_steps),
            ("every_n_epochs", every_n_epochs),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if every_n_train_steps is None and every_n_epochs is None:
            raise ValueError(
                "the monitor would never measure: set every_n_train_steps=<n> and/or "
                "every_n_epochs=<n> (or remove the callback)"
            )
        if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 3:
            raise ValueError(
                f"probe_size must be an integer >= 3 (the normalization, the specific coupling and "
                f"the random-pair baseline need several probes; 48 is the default), got {probe_size!r}"
            )
        if probe_split not in SPLITS:
            raise ValueError(f"probe_split must be one of {list(SPLITS)}, got {probe_split!r}")
        if isinstance(probe_seed, bool) or not isinstance(probe_seed, int):
            raise TypeError(f"probe_seed must be an int, got {probe_seed!r}")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        if not isinstance(prefix, str):
            raise TypeError(
                f"prefix must be a string such as '' or 'probe/', got {type(prefix).__name__}"
            )
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(pred, target) -> scalar, got {type(loss_fn).__name__}"
            )

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
        """Schedule position (with the overhead budget's next allowed step) and probe identity."""
        return {
            "last_step": self._last_step,
            "probe": self._probe_identity,
            "budget": self.budget.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the schedule; the probe set is checked against the stored identity when drawn."""
        self._last_step = int(state_dict["last_step"])
        self._restored_identity = state_dict.get("probe")
        self.budget.load_state_dict(state_dict.get("budget", {}))
        if self._probe_identity is not None:
            self._check_restored_probe()

    # ------------------------------------------------------------------ setup and checks
    @contextlib.contextmanager
    def _configuring(self) -> Iterator[None]:
        """Report a mismatch between the monitor and the run as a :class:`ConfigurationError`."""
        try:
            yield
        except ConfigurationError:
            raise
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"OrbitCoherenceMonitor: {error}") from error

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Complete the measurement's group and field types from the datamodule's declarations."""
        with self._configuring():
            self._setup(trainer, pl_module, stage)

    def _setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        sharded = {"FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy"}
        strategy = getattr(trainer, "strategy", None)
        if sharded & {cls.__name__ for cls in type(strategy).__mro__}:
            raise ValueError(
                f"OrbitCoherenceMonitor does not measure sharded training "
                f"({type(strategy).__name__}): each rank holds only a shard of the parameters, and "
                "per-sample gradients need all of them. Train with DDP (strategy='ddp') while "
                "monitoring, or measure saved checkpoints with `symcoherence analyze`"
            )
        datamodule = trainer.datamodule
        self.spec = self.spec.complete(**declared_defaults(datamodule))
        if stage == "fit":
            self._write_hparams(trainer, pl_module)
        declared = [
            g
            for g in (
                getattr(datamodule, name, None) for name in ("diagnostic_group", "symmetry_group")
            )
            if isinstance(g, Group)
        ]
        outside = [
            e for e in self.spec.measured_elements if declared and not any(e in g for g in declared)
        ]
        if outside:
            rank_zero_warn(
                f"elements {outside} of group {self.group.name} are not among the symmetries the "
                f"datamodule declares ({', '.join(g.name for g in declared)}); their statistics "
                "measure symmetries the data do not have"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw the probe set and check it against field types, group and model (first chance)."""
        self._prepare(trainer, pl_module)
        self.budget.agree = lambda interval: all_ranks_max(interval, device=pl_module.device)
        self.budget.start(trainer.global_step)

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._probe is not None:
            return
        if not self.spec.is_complete:
            self.setup(trainer, pl_module, "fit")
        with isolated(pl_module, trainer.optimizers, self.eval_mode), self._configuring():
            inputs, targets, identity = draw_probe(
                trainer.datamodule,
                pl_module,
                self.probe_size,
                self.probe_split,
                self.probe_seed,
                trainer=trainer,
                batch_items=self.batch_items,
            )
            check_configuration(self.spec, measured_model(pl_module), inputs, targets)
        self._probe = (inputs, targets)
        self._probe_identity = identity
        if self._restored_identity is not None:
            self._check_restored_probe()

    def _check_restored_probe(self) -> None:
        stored, current = self._restored_identity, self._probe_identity
        if (
            stored is not None
            and current is not None
            and stored.get("sha256") != current.get("sha256")
        ):
            rank_zero_warn(
                f"the probe set differs from the one in the checkpoint (stored {stored}, now "
                f"{current}): values after resuming are not comparable with earlier ones; resume "
                "with the same data, probe_split, probe_seed and probe_size"
            )

    # ------------------------------------------------------------------ schedule
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Measure when the optimizer step just taken made ``global_step`` a multiple of n."""
        n, step = self.every_n_train_steps, trainer.global_step
        if n is not None and step > 0 and step % n == 0 and step != self._last_step:
            self._scheduled(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure at the end of every n-th epoch (unless this step was just measured)."""
        n = self.every_n_epochs
        if (
            n is not None
            and (trainer.current_epoch + 1) % n == 0
            and trainer.global_step != self._last_step
        ):
            self._scheduled(trainer, pl_module)

    def _scheduled(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A scheduled firing: run it if the overhead budget allows, then space the next one."""
        step = trainer.global_step
        if not self.budget.allows(step):
            return
        start = self.budget.clock()
        self.measure(trainer, pl_module)
        interval = self.budget.record(step, self.budget.clock() - start)
        if self.budget.max_overhead is None or self.group is None:
            return
        keys = self.keys
        extra = {keys.measurement("interval_steps"): float(interval)}
        if math.isfinite(self.budget.overhead):
            extra[keys.measurement("overhead")] = self.budget.overhead
        for key, value in extra.items():
            pl_module.log(key, value, logger=False, sync_dist=False, batch_size=1)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(extra, step=step)

    def _write_hparams(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Declare the run's hparams session with the monitor's metrics, before Lightning's own.

        TensorBoard's HParams dashboard shows the first session of a run and reads each metric as
        the last value of its scalar tag, so the session is written once, at setup, naming basin
        compatibility and orbit coherence (Lightning's later session, with its ``hp_metric``, is
        not shown; ``TensorBoardLogger(default_hp_metric=False)`` drops that placeholder).
        """
        writer = tensorboard.find_tensorboard_writer(trainer.loggers)
        if self._hparams_written or writer is None or not trainer.is_global_zero:
            return
        self._hparams_written = True
        record, keys = self.spec.record(), self.keys
        params = dict(getattr(pl_module, "hparams", {}) or {})
        for setting in ("metric", "normalization"):
            params[f"{self.prefix}monitor/{record['group']}/{setting}"] = record[setting]
        params[f"{self.prefix}monitor/{record['group']}/probe_size"] = self.probe_size
        tensorboard.write_hparams(writer, params, [keys.compatibility(), keys.orbit()])

    # ------------------------------------------------------------------ one measurement
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float] | None:
        """Measure now and log; returns the logged scalars, or ``None`` when the firing was skipped.

        Callable from any Lightning hook (training or validation; inference mode is left for the
        gradient pass). Every rank must call it at the same point: it enters collectives.
        """
        self._last_step = trainer.global_step
        self._prepare(trainer, pl_module)
        inputs, targets = self._probe
        optimizer = trainer.optimizers[0] if trainer.optimizers else None

        def resolve() -> Metric:
            if self.spec.metric == "adam" and optimizer is None:
                raise ValueError(
                    "metric='adam' reads the training optimizer, but the trainer has none"
                )
            return self.spec.resolved_metric(optimizer)

        def work(elements: list[str], metric: Metric) -> Measurement:
            with isolated(pl_module, trainer.optimizers, self.eval_mode):
                return measure(
                    measured_model(pl_module),
                    find_loss(pl_module, self.loss_fn),
                    inputs,
                    targets,
                    dataclasses.replace(self.spec, metric=metric),
                    elements=elements,
                )

        outcome = measure_collectively(work, self.spec.measured_elements, resolve, pl_module.device)
        if outcome.result is None:
            self._skip(trainer, outcome.messages, outcome.error)
            return None
        return self._log(trainer, pl_module, outcome.result)

    def _skip(
        self, trainer: Trainer, messages: list[str | None], error: BaseException | None
    ) -> None:
        details = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
        text = (
            f"OrbitCoherenceMonitor ({self.group.name if self.group else '?'}) could not measure at "
            f"step {trainer.global_step}: {details}"
        )
        if self.on_error == "raise":
            raise MeasurementError(text) from error
        rank_zero_warn(
            f"{text}. Nothing was logged for this step; training goes on (on_error='raise' stops instead)"
        )

    def _title(self, step: int) -> str:
        record = self.spec.record()
        return (
            f"{record['group']}, {record['metric']} metric, {record['normalization']} "
            f"normalization, N = {self.probe_size} {self.probe_split} probes, step {step}"
        )

    def _log(
        self, trainer: Trainer, pl_module: LightningModule, result: Measurement
    ) -> dict[str, float]:
        keys = self.keys
        scalars = result.scalars(self.prefix)
        for key, value in scalars.items():
            pl_module.log(key, value, logger=False, sync_dist=False, batch_size=1)
        if not trainer.is_global_zero:
            return scalars
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        writer = tensorboard.find_tensorboard_writer(trainer.loggers)
        if writer is not None:
            if not self._layout_written:
                tensorboard.write_layout(writer, keys)
                self._layout_written = True
                self._element_runs = tensorboard.ElementRuns(writer.log_dir, keys)
            self._element_runs.write(result.summary(), step)
            tensorboard.log_firing(writer, keys, result, step, self.log_figures, self._title(step))
        return scalars

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Close the per-element TensorBoard runs."""
        if self._element_runs is not None:
            self._element_runs.close()
            self._element_runs = None
            self._layout_written = False
