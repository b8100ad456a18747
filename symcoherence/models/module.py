r"""The LightningModule that trains a backbone as a one-step emulator and validates its rollouts.

Training is teacher-forced: each batch ``(x, y)`` of inputs ``(B, C_in, H, W)`` and next states
``(B, C_out, H, W)`` contributes

.. math:: \mathcal{L} = \frac{1}{B} \sum_{b} \ell\big(f_\theta(x_b), y_b\big),

with the per-sample loss ``ℓ`` (default :func:`~symcoherence.coherence.smse`), exposed as
:attr:`EmulatorModule.loss_fn` for the orbit-coherence callback. Logged keys: ``train/loss``,
``val/loss`` and, every ``rollout_every_n_epochs`` epochs, ``val/rollout/nrmse/step_XX`` (XX =
1 … horizon), ``val/rollout/nrmse_mean``, ``val/rollout/corr_time_0.8``,
``val/rollout/corr_time_0.9`` (in steps) and ``val/rollout/spectrum_error`` (see
:mod:`symcoherence.models.rollout_metrics`); with a ``TensorBoardLogger``, the image
``val/panel`` (input, truth, prediction, error of the first validation sample).

**Rollout hook.** Rollout metrics need whole trajectories, which one-step pairs do not carry. The
module calls ``trainer.datamodule.rollout_batch(horizon)`` once and caches the result; the
datamodule returns ``(x0, trajectory)`` with ``x0`` the model input ``(B, C_in, H, W)`` (a stacked
history of ``k`` frames when ``C_in = k·C_out``) and ``trajectory`` the true next states
``(B, T, C_out, H, W)``, ``T >= horizon``, in the same normalization as the training pairs. Without
the hook the rollout metrics are skipped (logged once at INFO level).

Example:
    >>> import torch
    >>> from symcoherence.models import EmulatorModule, UNet2d
    >>> module = EmulatorModule(UNet2d(1, 1, width=8, depth=1))
    >>> module(torch.randn(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    >>> module.hparams["backbone"]["class_path"], module.hparams["loss"]
    ('symcoherence.models.unet.UNet2d', 'symcoherence.coherence.loss.smse')
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from symcoherence.coherence.loss import smse
from symcoherence.groups import FieldType, Group, resolve_group
from symcoherence.models import rollout_metrics as rm
from symcoherence.models.base import build_from_spec, module_spec
from symcoherence.models.group_averaged import GroupAveraged
from symcoherence.models.panel import render_panel

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _resolve_loss(loss: LossFn | str | None) -> tuple[LossFn, str | None]:
    """The loss function and, when it is importable by name, its dotted import path."""
    if loss is None:
        loss = smse
    if isinstance(loss, str):
        module_name, _, name = loss.rpartition(".")
        try:
            loss = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f"loss {loss!r} is not an importable function; give a dotted path such as "
                "'symcoherence.coherence.smse' or pass the function itself"
            ) from error
    if not callable(loss):
        raise TypeError(f"loss must be a function loss_fn(pred, target) -> scalar; got {loss!r}")
    path = f"{getattr(loss, '__module__', '')}.{getattr(loss, '__qualname__', '')}"
    module_name, _, name = path.rpartition(".")
    try:
        importable = getattr(importlib.import_module(module_name), name, None) is loss
    except ImportError:
        importable = False
    return loss, path if importable else None


def _as_field_type(value: FieldType | list[str] | None) -> FieldType | None:
    return value if value is None or isinstance(value, FieldType) else FieldType(value)


class EmulatorModule(L.LightningModule):
    """One-step emulator training with rollout validation (see the module docstring).

    Args:
        backbone: the model ``(B, C_in, H, W) -> (B, C_out, H, W)``; a spec dict
            ``{"class_path", "init_args"}`` is built first (this is how checkpoints restore it).
        loss: per-sample loss ``loss_fn(pred, target) -> scalar`` on unbatched ``(C, H, W)``
            tensors, or its dotted import path; default :func:`~symcoherence.coherence.smse`.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        rollout_horizon: number of autoregressive steps validated (0 disables rollouts).
        rollout_every_n_epochs: validate rollouts every this many epochs.
        log_images: log the image panel when a ``TensorBoardLogger`` is attached.
        field_type: field type of the inputs (the CLI links it from the datamodule).
        target_field_type: field type of the targets (default ``field_type``).
        diagnostic_group: the small group that ``group_average`` averages over, e.g. ``D4`` (the
            CLI links the datamodule's ``diagnostic_group``; not its full symmetry group, whose
            ``8 n²`` elements would make averaging absurdly expensive).
        group_average: wrap the backbone in :class:`~symcoherence.models.GroupAveraged` over
            ``diagnostic_group`` — the exactly equivariant control model; needs ``field_type`` and
            ``diagnostic_group``.

    Equivariance:
        Exactly that of the backbone: the module adds no layers. Rollouts inherit the one-step
        symmetries of ``f`` for actions that commute with re-forming the input history (all
        the planar grid actions do, since they act frame by frame).

    Checkpoints store the backbone's spec (for the symcoherence backbones and
    :class:`GroupAveraged` of them) and the loss's import path, so
    ``EmulatorModule.load_from_checkpoint(path)`` rebuilds the module; for other backbones or
    losses pass them again: ``load_from_checkpoint(path, backbone=net, loss=fn)``.

    Raises:
        TypeError: if ``backbone`` is not a module or ``loss`` not callable.
        ValueError: on bad numbers; at ``setup`` or the first batch, if the data's channel counts
            do not match the backbone.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        loss: LossFn | str | None = None,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        rollout_horizon: int = 10,
        rollout_every_n_epochs: int = 1,
        log_images: bool = True,
        field_type: FieldType | list[str] | None = None,
        target_field_type: FieldType | list[str] | None = None,
        diagnostic_group: Group | str | dict | None = None,
        group_average: bool = False,
    ):
        super().__init__()
        if isinstance(backbone, dict):
            backbone = build_from_spec(backbone)
        if not isinstance(backbone, torch.nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        self.field_type = _as_field_type(field_type)
        self.target_field_type = _as_field_type(target_field_type) or self.field_type
        self.diagnostic_group = resolve_group(diagnostic_group)
        if lr <= 0 or weight_decay < 0 or rollout_horizon < 0 or rollout_every_n_epochs < 1:
            raise ValueError(
                "need lr > 0, weight_decay >= 0, rollout_horizon >= 0 and "
                f"rollout_every_n_epochs >= 1; got lr={lr}, weight_decay={weight_decay}, "
                f"rollout_horizon={rollout_horizon}, rollout_every_n_epochs={rollout_every_n_epochs}"
            )
        spec = module_spec(backbone)
        if group_average:
            if self.diagnostic_group is None or self.field_type is None:
                raise ValueError(
                    "group_average=True needs diagnostic_group and field_type (the CLI links both "
                    "from the datamodule; in Python pass e.g. diagnostic_group=D4(), "
                    "field_type=FieldType(['pseudoscalar']))"
                )
            backbone = GroupAveraged(
                backbone, self.diagnostic_group, self.field_type, self.target_field_type
            )
        self.backbone = backbone
        self.loss_fn, loss_path = _resolve_loss(loss)
        hparams: dict[str, Any] = {
            "lr": lr,
            "weight_decay": weight_decay,
            "rollout_horizon": rollout_horizon,
            "rollout_every_n_epochs": rollout_every_n_epochs,
            "log_images": log_images,
            "group_average": group_average,
        }
        if self.field_type is not None:
            hparams["field_type"] = self.field_type.to_list()
            hparams["target_field_type"] = self.target_field_type.to_list()
        if self.diagnostic_group is not None:
            hparams["diagnostic_group"] = self.diagnostic_group.spec()
        if spec is not None:
            hparams["backbone"] = spec
        if loss_path is not None:
            hparams["loss"] = loss_path
        self.save_hyperparameters(hparams)
        self._rollout_data: tuple[torch.Tensor, torch.Tensor] | None = None
        self._rollout_hook_missing_logged = False
        self._panel_sample: tuple[torch.Tensor, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""
        return self.backbone(x)

    def per_sample_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``loss_fn`` applied to each sample: ``(B, C, H, W), (B, C, H, W) -> (B,)``."""
        return torch.vmap(self.loss_fn)(prediction, target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW with the configured learning rate and weight decay."""
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    # ------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Check the datamodule against the model before the first step.

        Compares its declared channel counts (if any) with the backbone's and, before fitting or
        validating with rollouts, loads the rollout batch once, so that a horizon longer than the
        trajectories fails here rather than at the end of the first epoch.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        horizon = self.hparams["rollout_horizon"]
        if stage in ("fit", "validate") and horizon:
            self._rollout_batch(horizon)
        for name in ("in_channels", "out_channels"):
            data_value = getattr(datamodule, name, None)
            model_value = getattr(self.backbone, name, None)
            if isinstance(data_value, int) and isinstance(model_value, int):
                if data_value != model_value:
                    raise ValueError(
                        f"the datamodule has {name}={data_value} but the backbone was built with "
                        f"{name}={model_value}; build the backbone with {name}={data_value} (with "
                        f"the CLI, link data.{name} to model.backbone.init_args.{name})"
                    )

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor, prediction: torch.Tensor) -> None:
        if prediction.shape != y.shape:
            raise ValueError(
                f"the backbone maps inputs {tuple(x.shape)} to {tuple(prediction.shape)} but the "
                f"targets have shape {tuple(y.shape)}; set out_channels={y.shape[1]} on the "
                "backbone (or fix the datamodule's target channels)"
            )

    def _unpack(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                "EmulatorModule expects batches (inputs (B, C_in, H, W), targets (B, C_out, H, W)); "
                f"got {type(batch).__name__}"
            )
        return batch[0], batch[1]

    def _one_step(self, batch: Any) -> tuple[torch.Tensor, ...]:
        x, y = self._unpack(batch)
        prediction = self(x)
        self._check_batch(x, y, prediction)
        return x, y, prediction, self.per_sample_loss(prediction, y).mean()

    def one_step_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced loss of a batch ``(x, y)``: the batch mean of ``loss_fn(f(x_b), y_b)``."""
        return self._one_step(batch)[-1]

    # ------------------------------------------------------------------ loops
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Teacher-forced one-step loss, logged as ``train/loss``."""
        x, _, _, loss = self._one_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One-step loss, logged as ``val/loss``; keeps the first sample for the image panel."""
        x, y, prediction, loss = self._one_step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        if batch_idx == 0:
            self._panel_sample = (x[0].detach(), y[0].detach(), prediction[0].detach())
        return loss

    def on_validation_epoch_end(self) -> None:
        """Rollout metrics and the image panel (not during the sanity check)."""
        if self.trainer.sanity_checking:
            return
        horizon = self.hparams["rollout_horizon"]
        if horizon and self.current_epoch % self.hparams["rollout_every_n_epochs"] == 0:
            data = self._rollout_batch(horizon)
            if data is not None:
                self.log_dict(self.rollout_metrics(*data), sync_dist=True)
        if self.hparams["log_images"] and self._panel_sample is not None:
            loggers = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
            if loggers:
                image = render_panel(*self._panel_sample)
                for logger in loggers:
                    logger.experiment.add_image(
                        "val/panel", image, self.global_step, dataformats="HWC"
                    )

    # ------------------------------------------------------------------ rollouts
    def _rollout_batch(self, horizon: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._rollout_data is None:
            hook = getattr(getattr(self.trainer, "datamodule", None), "rollout_batch", None)
            if hook is None:
                if not self._rollout_hook_missing_logged:
                    log.info(
                        "rollout metrics skipped: the datamodule has no rollout_batch(horizon) "
                        "returning (x0 (B, C_in, H, W), trajectory (B, T, C_out, H, W))"
                    )
                    self._rollout_hook_missing_logged = True
                return None
            x0, trajectory = hook(horizon)
            if trajectory.dim() != 5 or trajectory.shape[1] < horizon or x0.dim() != 4:
                raise ValueError(
                    f"rollout_batch({horizon}) must return x0 (B, C_in, H, W) and a trajectory "
                    f"(B, T >= {horizon}, C_out, H, W); got {tuple(x0.shape)} and "
                    f"{tuple(trajectory.shape)}"
                )
            self._rollout_data = (x0, trajectory[:, :horizon])
        x0, trajectory = self._rollout_data
        return x0.to(self.device, self.dtype), trajectory.to(self.device, self.dtype)

    @torch.no_grad()
    def rollout_metrics(
        self, x0: torch.Tensor, trajectory: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Roll out from ``x0`` for ``T`` steps and score it against ``trajectory (B, T, C, H, W)``.

        Returns:
            ``{"val/rollout/nrmse/step_XX", "val/rollout/nrmse_mean", "val/rollout/corr_time_0.8",
            "val/rollout/corr_time_0.9", "val/rollout/spectrum_error"}``, averaged over samples.
        """
        prediction = rm.autoregressive_rollout(self, x0, trajectory.shape[1])
        if prediction.shape != trajectory.shape:
            raise ValueError(
                f"rollout predictions {tuple(prediction.shape)} do not match the datamodule's "
                f"trajectory {tuple(trajectory.shape)}"
            )
        per_step = rm.nrmse(prediction, trajectory).mean(dim=0)
        metrics = {f"val/rollout/nrmse/step_{t + 1:02d}": v for t, v in enumerate(per_step)}
        metrics["val/rollout/nrmse_mean"] = per_step.mean()
        for threshold in (0.8, 0.9):
            time = rm.correlation_time(prediction, trajectory, threshold).mean()
            metrics[f"val/rollout/corr_time_{threshold}"] = time
        metrics["val/rollout/spectrum_error"] = rm.spectrum_error(prediction, trajectory).mean()
        return metrics
