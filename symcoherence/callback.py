"""``OrbitCoherenceMonitor``: the Lightning callback that logs orbit influence while training runs.

Glue only: scheduling, the probe set, state, logging and data-parallel work sharing. Every number
comes from :mod:`symcoherence.coherence` (``orbit_influence``, ``equivariance_error``,
``OrbitInfluence.summary``).

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
    >>> from symcoherence.callback import OrbitCoherenceMonitor
    >>> monitor = OrbitCoherenceMonitor(group="D4", every_n_train_steps=100, every_n_epochs=None)
    >>> monitor.state_key
    "OrbitCoherenceMonitor{'group': 'D4', 'prefix': ''}"
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from symcoherence import callback_logging, distributed
from symcoherence.callback_isolation import isolated
from symcoherence.callback_setup import (
    SPLITS,
    LossFn,
    as_field_type,
    check_configuration,
    draw_probe,
    find_loss,
    measured_model,
    resolve_group,
)
from symcoherence.coherence import (
    OrbitInfluence,
    equivariance_error,
    orbit_influence,
    rollout_equivariance_error,
)
from symcoherence.coherence.metrics import Metric
from symcoherence.coherence.summary import quantiles
from symcoherence.groups import FieldType, Group

log = logging.getLogger(__name__)

_METRICS = ("identity", "adam", "gauss_newton")
_NORMALIZATIONS = ("standard", "cosine", "none")


class MeasurementError(RuntimeError):
    """A firing failed on at least one rank and ``on_error="raise"`` was requested."""


def _positive_int_or_none(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


class OrbitCoherenceMonitor(Callback):
    """Log orbit influence, coherence ratios and forward equivariance errors during training.

    Add it to any ``Trainer``. The model differentiated is ``pl_module.backbone`` when the module
    has one, else ``pl_module`` itself; the per-sample loss is ``loss_fn`` if given, else
    ``pl_module.loss_fn``, else :func:`symcoherence.smse`. ``loss_fn(pred, target)`` takes one
    unbatched sample and returns a scalar.

    Scalars (DESIGN §3.3 keys, e.g. ``coherence/D4/ratio/r``, ``basin/D4/compatibility``) go to
    every logger at ``step = trainer.global_step`` and to ``trainer.callback_metrics`` through
    ``pl_module.log(..., logger=False)``, so callbacks such as ``ModelCheckpoint`` can monitor
    them. With a TensorBoard logger the monitor also writes a figure, the influence heatmap and
    histograms per firing, one custom-scalars layout, and the final basin compatibility as an
    hparams metric.

    Under data-parallel training the group elements are split across ranks in contiguous shares;
    the parts are gathered and every rank computes the same summary (logged once, by rank 0).
    A failure or a non-finite value on any rank makes every rank skip the firing with a warning
    (``on_error="warn"``) or raise :class:`MeasurementError` (``on_error="raise"``); the ranks
    agree through a collective that each of them enters, so none waits forever.

    Args:
        group: a :class:`~symcoherence.groups.Group`, a name (``"D4"``, ``"C4"``) or a group spec;
            default: the datamodule's ``symmetry_group``.
        elements: element names to measure (default: all); the identity is always included.
        metric: ``"identity"``, ``"adam"`` (the training optimizer's second moments),
            ``"gauss_newton"`` or a :class:`~symcoherence.coherence.Metric`.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"``.
        every_n_train_steps: measure after every n-th optimizer step (``None``: never by steps).
        every_n_epochs: measure at the end of every n-th epoch (``None``: never by epochs).
        probe_size: number ``N`` of probe pairs (at least 2).
        probe_split: where probes come from: ``"val"``, ``"train"`` or ``"test"``.
        probe_seed: seed of the probe draw (the global RNG is not used).
        equivariance: also log forward equivariance errors ``E_n(g)``.
        rollout_steps: if positive, also log the equivariance error of a rollout of this length.
        log_figures: write the figure and heatmap to TensorBoard (histograms are always written).
        chunk_size: per-sample gradient chunking, passed to the engine (``"auto"``, int, ``None``).
        on_error: ``"warn"`` (skip the firing, training goes on) or ``"raise"``.
        prefix: prepended to every logged key.
        loss_fn: per-sample loss overriding ``pl_module.loss_fn``.
        field_type: input field type (default: the datamodule's ``field_type``).
        target_field_type: target field type (default: the datamodule's ``target_field_type``,
            else ``field_type``).
        eval_mode: measure with the model in eval mode (default). With ``False`` the model's own
            modes are kept, and batch norm or dropout in training mode are refused.

    Raises:
        ValueError, TypeError: for invalid arguments (at construction) and for a configuration that
            does not match the data or the model (at ``setup`` / ``on_train_start``).
    """

    def __init__(
        self,
        group: Group | str | dict | None = None,
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
    ):
        if not (isinstance(metric, Metric) or metric in _METRICS):
            raise ValueError(
                f"metric must be one of {list(_METRICS)} or a symcoherence.coherence.Metric, got {metric!r}"
            )
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {list(_NORMALIZATIONS)}, got {normalization!r}"
            )
        _positive_int_or_none(every_n_train_steps, "every_n_train_steps")
        _positive_int_or_none(every_n_epochs, "every_n_epochs")
        if every_n_train_steps is None and every_n_epochs is None:
            raise ValueError(
                "the monitor would never measure: set every_n_train_steps=<n> and/or "
                "every_n_epochs=<n> (or remove the callback)"
            )
        if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 2:
            raise ValueError(
                f"probe_size must be an integer >= 2 (the normalization and the off-diagonal "
                f"baseline need several probes; 48 is the default), got {probe_size!r}"
            )
        if probe_split not in SPLITS:
            raise ValueError(f"probe_split must be one of {list(SPLITS)}, got {probe_split!r}")
        if isinstance(probe_seed, bool) or not isinstance(probe_seed, int):
            raise TypeError(f"probe_seed must be an int, got {probe_seed!r}")
        if (
            isinstance(rollout_steps, bool)
            or not isinstance(rollout_steps, int)
            or rollout_steps < 0
        ):
            raise ValueError(
                f"rollout_steps must be an integer >= 0 (0 disables), got {rollout_steps!r}"
            )
        if not (
            chunk_size in ("auto", None)
            or (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size > 0)
        ):
            raise ValueError(
                f"chunk_size must be 'auto', None or a positive integer, got {chunk_size!r}"
            )
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
        if elements is not None and (isinstance(elements, str) or not elements):
            raise ValueError(
                f"elements must be a non-empty list of element names such as ['e', 'r'], got {elements!r}"
            )
        self.group = resolve_group(group)
        self.elements = None if elements is None else tuple(elements)
        if self.group is not None:
            self._check_elements(self.group)
        self.metric = metric
        self.normalization = normalization
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self.probe_size = probe_size
        self.probe_split = probe_split
        self.probe_seed = probe_seed
        self.equivariance = bool(equivariance)
        self.rollout_steps = rollout_steps
        self.log_figures = bool(log_figures)
        self.chunk_size = chunk_size
        self.on_error = on_error
        self.prefix = prefix
        self.loss_fn = loss_fn
        self.field_type = as_field_type(field_type, "field_type")
        self.target_field_type = as_field_type(target_field_type, "target_field_type")
        self.eval_mode = bool(eval_mode)
        self._requested_group = group
        self._probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self._probe_identity: dict[str, Any] | None = None
        self._restored_identity: dict[str, Any] | None = None
        self._last_step = -1
        self._final: dict[str, float] = {}
        self._layout_written = False

    # ------------------------------------------------------------------ identity and state
    @property
    def state_key(self) -> str:
        """Distinct per group and prefix, so several monitors coexist in one checkpoint."""
        name = self.group.name if self.group is not None else "datamodule"
        return self._generate_state_key(group=name, prefix=self.prefix)

    @property
    def measured_elements(self) -> tuple[str, ...]:
        """The elements measured: the identity first, then ``elements`` (default: all)."""
        if self.group is None:
            raise ValueError(
                "the group is not known yet: it is resolved at setup from the datamodule"
            )
        chosen = self.group.elements if self.elements is None else self.elements
        return (self.group.identity, *(e for e in chosen if e != self.group.identity))

    def state_dict(self) -> dict[str, Any]:
        """Schedule position, probe identity and the last finite basin compatibility."""
        return {
            "last_step": self._last_step,
            "probe": self._probe_identity,
            "final": dict(self._final),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the schedule; the probe set is checked against the stored identity when drawn."""
        self._last_step = int(state_dict["last_step"])
        self._restored_identity = state_dict.get("probe")
        self._final = dict(state_dict.get("final", {}))
        if self._probe_identity is not None:
            self._check_restored_probe()

    def _check_elements(self, group: Group) -> None:
        for element in self.elements or ():
            if element not in group:
                raise ValueError(
                    f"element {element!r} is not in group {group.name}; pass elements among "
                    f"{list(group.elements)} (or elements=None for all)"
                )

    # ------------------------------------------------------------------ setup and checks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Resolve the group and field types from the datamodule where they were not given."""
        datamodule = trainer.datamodule
        declared = getattr(datamodule, "symmetry_group", None)
        if self.group is None:
            if declared is None:
                raise ValueError(
                    "OrbitCoherenceMonitor has no group: pass group=... (e.g. group='D4' or "
                    "group=symcoherence.groups.D4()) or use a datamodule with a `symmetry_group` "
                    f"attribute; got datamodule {type(datamodule).__name__ if datamodule else None}"
                )
            self.group = resolve_group(declared)
            self._check_elements(self.group)
        elif isinstance(declared, Group):
            outside = [e for e in self.measured_elements if e not in declared]
            if outside:
                rank_zero_warn(
                    f"elements {outside} of group {self.group.name} are not among the symmetries "
                    f"the datamodule declares ({declared.name}: {list(declared.elements)}); their "
                    "coherence ratios measure symmetries the data does not have"
                )
        if self.field_type is None:
            self.field_type = as_field_type(
                getattr(datamodule, "field_type", None), "datamodule.field_type"
            )
        if self.field_type is None:
            raise ValueError(
                "OrbitCoherenceMonitor needs the input field type: pass field_type=... (e.g. "
                "field_type=FieldType(['pseudoscalar'])) or use a datamodule with a `field_type` "
                "attribute"
            )
        if self.target_field_type is None:
            declared_target = getattr(datamodule, "target_field_type", None)
            self.target_field_type = (
                as_field_type(declared_target, "datamodule.target_field_type") or self.field_type
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw the probe set and check it against field types, group and model (first chance)."""
        self._prepare(trainer, pl_module)

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._probe is not None:
            return
        if self.group is None or self.field_type is None:
            self.setup(trainer, pl_module, "fit")
        with isolated(pl_module, trainer.optimizers, self.eval_mode):
            inputs, targets, identity = draw_probe(
                trainer, pl_module, self.probe_size, self.probe_split, self.probe_seed
            )
            check_configuration(
                self.group,
                self.measured_elements,
                self.field_type,
                self.target_field_type,
                measured_model(pl_module),
                inputs,
                targets,
            )
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
            self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure at the end of every n-th epoch (unless this step was just measured)."""
        n = self.every_n_epochs
        if (
            n is not None
            and (trainer.current_epoch + 1) % n == 0
            and trainer.global_step != self._last_step
        ):
            self.measure(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the last finite basin compatibility as an hparams metric in TensorBoard."""
        writer = (
            callback_logging.find_tensorboard_writer(trainer.loggers)
            if trainer.is_global_zero
            else None
        )
        if writer is None or not self._final:
            return
        hparams = {}
        for logger in trainer.loggers:
            hparams.update(getattr(logger, "hparams", {}) or {})
        name = self.group.name if self.group is not None else "group"
        hparams.update(
            {
                f"{self.prefix}monitor/{name}/metric": str(self.metric),
                f"{self.prefix}monitor/{name}/normalization": self.normalization,
                f"{self.prefix}monitor/{name}/probe_size": self.probe_size,
            }
        )
        callback_logging.write_hparams(writer, hparams, self._final)

    # ------------------------------------------------------------------ one measurement
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float] | None:
        """Measure now and log; returns the logged scalars, or ``None`` when the firing was skipped.

        Callable from any Lightning hook (training or validation; inference mode is left for the
        gradient pass). Every rank must call it at the same point: it enters collectives.
        """
        self._last_step = trainer.global_step
        self._prepare(trainer, pl_module)
        rank, world_size = distributed.rank_and_world_size()
        local = distributed.split_evenly(self.measured_elements, rank, world_size)
        part: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            with isolated(pl_module, trainer.optimizers, self.eval_mode):
                part = self._compute(trainer, pl_module, local)
        except Exception as err:  # every failure must reach the agreement below
            error = err
        message = None if error is None else f"{type(error).__name__}: {error}"
        if message is None and part is not None:
            bad = [
                key
                for key, value in part.items()
                if torch.is_tensor(value) and not bool(torch.isfinite(value).all())
            ]
            if part["influence"] is not None and not bool(
                torch.isfinite(part["influence"].matrix).all()
            ):
                bad.append("influence matrix")
            if bad:
                message = f"non-finite values (NaN or Inf) in {bad}, from gradients or losses on the probe set"
        if not distributed.all_ranks_agree(message is None, device=pl_module.device):
            messages = distributed.all_gather_objects(message)
            self._skip(trainer, messages, error)
            return None
        parts = distributed.all_gather_objects(part)
        return self._log(trainer, pl_module, parts)

    def _compute(
        self, trainer: Trainer, pl_module: LightningModule, local: list[str]
    ) -> dict[str, Any]:
        assert self._probe is not None and self.group is not None
        if not local:
            return {"influence": None, "equivariance": None, "rollout": None}
        inputs, targets = self._probe
        model, loss_fn = measured_model(pl_module), find_loss(pl_module, self.loss_fn)
        types = {"field_type": self.field_type, "target_field_type": self.target_field_type}
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if self.metric == "adam" and optimizer is None:
            raise ValueError("metric='adam' reads the training optimizer, but the trainer has none")
        influence = orbit_influence(
            model,
            loss_fn,
            inputs,
            targets,
            self.group,
            elements=local,
            metric=self.metric,
            normalization=self.normalization,
            chunk_size=self.chunk_size,
            optimizer=optimizer,
            **types,
        )
        out: dict[str, Any] = {
            "influence": _to_cpu(influence),
            "equivariance": None,
            "rollout": None,
        }
        if self.equivariance:
            out["equivariance"] = equivariance_error(
                model, loss_fn, inputs, targets, self.group, elements=local, **types
            ).cpu()
        if self.rollout_steps:
            out["rollout"] = rollout_equivariance_error(
                model,
                loss_fn,
                inputs,
                self.group,
                self.field_type,
                steps=self.rollout_steps,
                elements=local,
            ).cpu()
        return out

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

    def _log(
        self, trainer: Trainer, pl_module: LightningModule, parts: list[dict[str, Any]]
    ) -> dict[str, float]:
        assert self.group is not None
        present = [p for p in parts if p["influence"] is not None]
        influence = OrbitInfluence.concatenate([p["influence"] for p in present])
        equivariance = (
            torch.cat([p["equivariance"] for p in present]) if self.equivariance else None
        )
        scalars = influence.summary(prefix=self.prefix, equivariance=equivariance)
        if self.rollout_steps:
            scalars.update(
                self._rollout_scalars(
                    influence.elements, torch.cat([p["rollout"] for p in present])
                )
            )
        dropped = [key for key, value in scalars.items() if not math.isfinite(value)]
        if dropped:
            log.info("not logging undefined (non-finite) statistics %s", dropped)
        scalars = {key: value for key, value in scalars.items() if math.isfinite(value)}
        step = trainer.global_step
        for key, value in scalars.items():
            pl_module.log(key, value, logger=False, sync_dist=False, batch_size=1)
        compatibility = f"{self.prefix}basin/{self.group.name}/compatibility"
        if compatibility in scalars:
            self._final = {compatibility: scalars[compatibility]}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=step)
            writer = callback_logging.find_tensorboard_writer(trainer.loggers)
            if writer is not None:
                if not self._layout_written:
                    callback_logging.write_layout(
                        writer, self.prefix, self.group.name, influence.elements
                    )
                    self._layout_written = True
                callback_logging.log_firing(
                    writer,
                    self.prefix,
                    self.group.name,
                    influence.elements,
                    influence.influence,
                    equivariance,
                    step,
                    self.log_figures,
                )
        return scalars

    def _rollout_scalars(self, elements: Sequence[str], errors: torch.Tensor) -> dict[str, float]:
        stats = quantiles(errors, [0.5, 0.75])
        base = f"{self.prefix}equivariance/{self.group.name}/rollout{self.rollout_steps}"
        out = {}
        for k, element in enumerate(elements):
            out[f"{base}/{element}/median"] = float(stats[0, k])
            out[f"{base}/{element}/q3"] = float(stats[1, k])
        return out


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
