"""EmulatorModule with a real Trainer: training, rollout metrics, TensorBoard panel, checkpoints."""

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

import symcoherence as sc
from symcoherence.data import ArraySource, TrajectoryDataModule
from symcoherence.groups import D4
from symcoherence.models import EmulatorModule, GroupAveraged, UNet2d
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing import assert_equivariant

GRID = 16


def _advance(u):
    """The synthetic dynamics: advect by one cell along x (exactly learnable by a circular conv)."""
    return u.roll(1, dims=-1)


def _smooth_fields(count, channels=1, seed=0):
    noise = torch.randn(count, channels, GRID, GRID, generator=torch.Generator().manual_seed(seed))
    for _ in range(2):  # a little smoothing so the fields look like flow snapshots
        noise = (noise + noise.roll(1, -1) + noise.roll(1, -2) + noise.roll((1, 1), (-1, -2))) / 2
    return noise


class AdvectionData(L.LightningDataModule):
    """One-step pairs of the shift dynamics, with a history of ``history`` frames as input."""

    def __init__(self, history=1, channels=1, rollout=True, declared_in_channels=None):
        super().__init__()
        self.history = history
        self.in_channels = declared_in_channels or history * channels
        self.out_channels = channels
        frames = [_smooth_fields(32, channels)]
        for _ in range(history):
            frames.append(_advance(frames[-1]))
        self.inputs = torch.cat(frames[:history], dim=1)
        self.targets = frames[history]
        if rollout:
            self.rollout_batch = self._rollout_batch

    def _rollout_batch(self, horizon):
        x0 = self.inputs[:4]
        state = self.targets[:4]
        steps = []
        for _ in range(horizon):
            steps.append(state)
            state = _advance(state)
        return x0, torch.stack(steps, dim=1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.inputs, self.targets), batch_size=8, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.inputs[:16], self.targets[:16]), batch_size=8)


class ExactAdvection(torch.nn.Module):
    """The perfect model of the synthetic dynamics (advances the newest frame)."""

    def __init__(self, channels=1, history=1, scale=1.0):
        super().__init__()
        self.in_channels, self.out_channels, self.scale = history * channels, channels, scale

    def forward(self, x):
        return self.scale * _advance(x[:, -self.out_channels :])


def _trainer(tmp_path=None, **kwargs):
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
    }
    options.update(kwargs)
    return L.Trainer(**options)


def _mean_loss(module, data):
    with torch.no_grad():
        return float(module.per_sample_loss(module(data.inputs), data.targets).mean())


def test_trains_a_few_steps_and_the_loss_decreases():
    data = AdvectionData()
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1), lr=3e-3, rollout_horizon=3)
    before = _mean_loss(module, data)
    trainer = _trainer(max_steps=24, val_check_interval=4, check_val_every_n_epoch=None)
    trainer.fit(module, datamodule=data)
    after = _mean_loss(module, data)
    assert after < 0.7 * before
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/rollout/nrmse_mean", "val/rollout/nrmse/step_03"):
        assert key in metrics


def test_training_loss_is_the_batch_mean_of_the_per_sample_loss():
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1))
    x, y = torch.randn(3, 1, GRID, GRID), torch.randn(3, 1, GRID, GRID)
    loss = module.one_step_loss((x, y))
    loop = torch.stack([sc.smse(module(x[n : n + 1])[0], y[n]) for n in range(3)]).mean()
    torch.testing.assert_close(loss, loop, **TOL["fp32"])
    assert module.loss_fn is sc.smse


def test_custom_loss_by_import_path_is_used_and_recorded():
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1), loss="torch.nn.functional.l1_loss")
    assert module.loss_fn is torch.nn.functional.l1_loss
    assert module.hparams["loss"] == "torch.nn.functional.l1_loss"


@pytest.mark.parametrize("history", [1, 3])
def test_perfect_model_has_zero_nrmse_and_maximal_correlation_time(history):
    data = AdvectionData(history=history)
    module = EmulatorModule(ExactAdvection(history=history), rollout_horizon=5)
    metrics = _trainer().validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/rollout/nrmse_mean"] == 0.0
    assert metrics["val/rollout/nrmse/step_05"] == 0.0
    assert metrics["val/rollout/corr_time_0.8"] == 5.0
    assert metrics["val/rollout/corr_time_0.9"] == 5.0
    assert metrics["val/rollout/spectrum_error"] == 0.0
    assert metrics["val/loss"] == 0.0


def test_zero_model_has_unit_nrmse_and_zero_correlation_time():
    module = EmulatorModule(ExactAdvection(scale=0.0), rollout_horizon=4)
    metrics = _trainer().validate(module, datamodule=AdvectionData(), verbose=False)[0]
    assert metrics["val/rollout/nrmse_mean"] == pytest.approx(1.0, rel=TOL["fp32"]["rtol"])
    assert metrics["val/rollout/corr_time_0.8"] == 0.0
    assert metrics["val/rollout/spectrum_error"] == pytest.approx(1.0, rel=TOL["fp32"]["rtol"])


def test_half_amplitude_model_has_known_rollout_errors():
    # f(x) = ½·advance(x): step t predicts 2^-t of the truth, so nRMSE_t = 1 − 2^-t exactly,
    # correlation stays 1 (a positive multiple) and the spectrum error is 1 − 4^-t.
    module = EmulatorModule(ExactAdvection(scale=0.5), rollout_horizon=3)
    data = AdvectionData()
    metrics = module.rollout_metrics(*data.rollout_batch(3))
    for t, expected in enumerate([0.5, 0.75, 0.875], start=1):
        assert float(metrics[f"val/rollout/nrmse/step_{t:02d}"]) == pytest.approx(
            expected, rel=1e-6
        )
    assert float(metrics["val/rollout/corr_time_0.9"]) == 3.0
    expected_spectrum = (0.75 + 0.9375 + 63 / 64) / 3
    assert float(metrics["val/rollout/spectrum_error"]) == pytest.approx(
        expected_spectrum, rel=1e-6
    )


def test_missing_rollout_hook_skips_rollouts_with_one_info_log(caplog):
    module = EmulatorModule(ExactAdvection(), rollout_horizon=3)
    trainer = _trainer()
    with caplog.at_level(logging.INFO, logger="symcoherence.models.module"):
        trainer.validate(module, datamodule=AdvectionData(rollout=False), verbose=False)
        trainer.validate(module, datamodule=AdvectionData(rollout=False), verbose=False)
    assert sum("rollout metrics skipped" in r.message for r in caplog.records) == 1
    assert not any(key.startswith("val/rollout") for key in trainer.callback_metrics)


def test_tensorboard_gets_the_image_panel_and_the_rollout_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1), rollout_horizon=2)
    _trainer(tmp_path, logger=logger, max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(
        module, datamodule=AdvectionData()
    )
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "val/panel" in events.Tags()["images"]
    assert {"val/loss", "val/rollout/nrmse_mean", "val/rollout/corr_time_0.9"} <= set(
        events.Tags()["scalars"]
    )
    image = events.Images("val/panel")[-1]
    assert image.width > image.height > 0


@pytest.mark.parametrize(
    "backbone",
    [
        lambda: UNet2d(2, 2, width=8, depth=1),
        lambda: GroupAveraged(UNet2d(2, 2, width=8, depth=1), sc.groups.D4(), ["vector"]),
    ],
)
def test_checkpoints_reload_with_load_from_checkpoint(tmp_path, backbone):
    module = EmulatorModule(backbone(), lr=1e-3, rollout_horizon=0)
    data = AdvectionData(channels=2)
    trainer = _trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_checkpointing=True,
    )
    trainer.fit(module, datamodule=data)
    path = trainer.checkpoint_callback.best_model_path
    restored = EmulatorModule.load_from_checkpoint(path)
    assert type(restored.backbone) is type(module.backbone)
    assert restored.hparams["lr"] == 1e-3
    x = data.inputs[:2]
    torch.testing.assert_close(restored(x), module(x), **TOL["exact"])


def test_group_average_option_wraps_the_backbone_and_survives_a_checkpoint(tmp_path):
    velocity = sc.FieldType(["vector"])
    module = EmulatorModule(
        UNet2d(2, 2, width=8, depth=1),
        rollout_horizon=0,
        field_type=velocity,
        diagnostic_group="D4",
        group_average=True,
    )
    assert isinstance(module.backbone, GroupAveraged)
    assert_equivariant(module, sc.groups.D4(), velocity, grid=8)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=AdvectionData(channels=2))
    path = tmp_path / "group_average.ckpt"
    trainer.save_checkpoint(path)
    restored = EmulatorModule.load_from_checkpoint(path)
    assert isinstance(restored.backbone, GroupAveraged)  # wrapped once, not twice
    assert isinstance(restored.backbone.backbone, UNet2d)
    assert restored.field_type == velocity and restored.diagnostic_group.name == "D4"
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(restored(x), module(x), **TOL["exact"])
    with pytest.raises(ValueError, match="needs diagnostic_group and field_type"):
        EmulatorModule(UNet2d(2, 2), group_average=True)


def test_declared_channel_mismatch_fails_at_setup():
    data = AdvectionData(declared_in_channels=2)
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1))
    with pytest.raises(
        ValueError,
        match="datamodule has in_channels=2 but the backbone was built with in_channels=1",
    ):
        _trainer(max_steps=1).fit(module, datamodule=data)


def test_rollout_horizon_longer_than_the_trajectories_fails_before_training(monkeypatch):
    trajectories = torch.randn(8, 6, 1, 16, 16)  # 6 frames: at most 5 rollout steps
    source = ArraySource(trajectories, ["scalar"], symmetry_group=D4())
    data = TrajectoryDataModule(source, batch_size=4, val_fraction=0.25, test_fraction=0.0)
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=1), rollout_horizon=8)
    steps = []
    monkeypatch.setattr(module, "training_step", lambda batch, index: steps.append(index))
    with pytest.raises(ValueError, match="a rollout of 8 steps after 1 input frame"):
        _trainer(max_steps=4).fit(module, datamodule=data)
    assert steps == []


def test_data_channel_mismatch_fails_at_the_first_batch():
    module = EmulatorModule(UNet2d(2, 1, width=8, depth=1))
    with pytest.raises(ValueError, match=r"expects inputs \(B, 2, H, W\)"):
        module.one_step_loss((torch.randn(2, 1, GRID, GRID), torch.randn(2, 1, GRID, GRID)))
    module = EmulatorModule(UNet2d(1, 2, width=8, depth=1))
    with pytest.raises(ValueError, match="set out_channels=1"):
        module.one_step_loss((torch.randn(2, 1, GRID, GRID), torch.randn(2, 1, GRID, GRID)))


def test_grid_not_divisible_by_the_stride_fails_at_the_first_batch():
    module = EmulatorModule(UNet2d(1, 1, width=8, depth=3))
    with pytest.raises(ValueError, match="divisible by 8"):
        module.one_step_loss((torch.randn(2, 1, 12, 12), torch.randn(2, 1, 12, 12)))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="backbone must be a torch.nn.Module"):
        EmulatorModule("unet")
    with pytest.raises(ValueError, match="not an importable function"):
        EmulatorModule(UNet2d(1, 1), loss="no.such.loss")
    with pytest.raises(ValueError, match="lr > 0"):
        EmulatorModule(UNet2d(1, 1), lr=0.0)
    with pytest.raises(TypeError, match="expects batches"):
        EmulatorModule(UNet2d(1, 1, width=8)).one_step_loss(torch.randn(2, 1, 16, 16))
