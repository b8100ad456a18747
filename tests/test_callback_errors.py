"""OrbitCoherenceMonitor: misconfigurations name their fix; failures skip (or raise); resume."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.tiny import (
    PlainData,
    RecordingLogger,
    TinyData,
    TinyModule,
    tiny_backbone,
    trainer,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

import symcoherence as sc
from symcoherence.callbacks import MeasurementError

Monitor = sc.OrbitCoherenceMonitor


@pytest.mark.parametrize(
    ("kwargs", "error", "fix"),
    [
        ({"metric": "fisher"}, ValueError, "unknown metric 'fisher'; expected one of"),
        ({"normalization": "l2"}, ValueError, "'standard', 'cosine', 'none'"),
        (
            {"every_n_train_steps": None, "every_n_epochs": None, "at_start": False},
            ValueError,
            "every_n_train_steps=<n>",
        ),
        ({"at_start": 1}, TypeError, "at_start must be True or False"),
        ({"early_schedule": 0}, ValueError, "until must be an integer >= 1"),
        ({"early_schedule": [0, -1]}, ValueError, "every early step must be an integer >= 0"),
        ({"early_schedule": "log"}, TypeError, "early_schedule takes None, a last step T"),
        ({"probe_transform": "train"}, TypeError, "probe_transform must be 'auto'"),
        ({"every_n_train_steps": 0}, ValueError, "positive integer"),
        ({"probe_size": 2}, ValueError, "probe_size must be an integer >= 3"),
        ({"probe_split": "validation"}, ValueError, "'train', 'val', 'test'"),
        ({"rollout_steps": -1}, ValueError, "rollout_steps must be an integer >= 0"),
        ({"chunk_size": 0}, ValueError, "'auto', None or a positive integer"),
        ({"on_error": "ignore"}, ValueError, "'warn' or 'raise'"),
        ({"group": "D5"}, ValueError, "pass the object"),
        ({"group": "Shifts"}, ValueError, "Shifts\\(box=1, period=64\\)"),
        ({"group": 4}, TypeError, "name such as 'D4'"),
        ({"group": "D4", "elements": ["e", "q"]}, ValueError, "valid elements are"),
        ({"elements": "r"}, ValueError, "list of element names"),
        ({"field_type": "scalar"}, TypeError, "a list of kinds"),
        ({"loss_fn": 3}, TypeError, "loss_fn\\(pred, target\\)"),
    ],
)
def test_invalid_arguments_fail_at_construction(kwargs, error, fix):
    with pytest.raises(error, match=fix):
        Monitor(max_overhead=None, **kwargs)


def _fit(monitor, module=None, data=None, **kwargs):
    fit = trainer([monitor], max_epochs=1, **kwargs)
    fit.fit(module or TinyModule(), datamodule=data or TinyData())
    return fit


class BatchNormModule(TinyModule):
    def __init__(self, track=True):
        super().__init__(
            nn.Sequential(tiny_backbone(), nn.BatchNorm2d(1, track_running_stats=track))
        )


@pytest.mark.parametrize(
    ("monitor", "module", "data", "fix"),
    [
        (
            lambda: Monitor(max_overhead=None, probe_size=4),
            None,
            PlainData,
            "pass group=.*diagnostic_group",
        ),
        (
            lambda: Monitor(max_overhead=None, group="D4", probe_size=4),
            None,
            PlainData,
            "pass field_type=",
        ),
        (
            lambda: Monitor(max_overhead=None, probe_size=4, field_type=["vector"]),
            None,
            None,
            "Pass field_type=.* to OrbitCoherenceMonitor",
        ),
        (
            lambda: Monitor(
                max_overhead=None, probe_size=4, target_field_type=["scalar", "scalar"]
            ),
            None,
            None,
            "target_field_type",
        ),
        (
            lambda: Monitor(max_overhead=None, probe_size=4, eval_mode=False),
            BatchNormModule,
            None,
            "call model.eval\\(\\)",
        ),
        (
            lambda: Monitor(max_overhead=None, probe_size=4),
            lambda: BatchNormModule(track=False),
            None,
            "GroupNorm/LayerNorm",
        ),
        (
            lambda: Monitor(max_overhead=None, probe_size=4),
            lambda: TinyModule(nn.Conv2d(1, 2, 1)),
            None,
            "one-step map",
        ),
        (
            lambda: Monitor(max_overhead=None, group="D4", field_type=["scalar"], probe_size=20),
            None,
            PlainData,
            "dataset has 12 samples",
        ),
    ],
)
def test_misconfiguration_fails_at_the_first_hook_with_the_fix(monitor, module, data, fix):
    with pytest.raises(ValueError, match=fix):
        _fit(monitor(), module and module(), data and data())


def test_group_that_does_not_fit_the_grid_names_the_fix():
    data = TinyData()
    data.val_pairs = tuple(
        t[..., :6] for t in data.val_pairs
    )  # non-square probes: no quarter turns
    with pytest.raises(ValueError, match="Pass a group=... that matches the grid"):
        _fit(Monitor(max_overhead=None, probe_size=4), data=data)


def test_plain_datamodule_with_explicit_types_draws_probes_from_validation_data():
    recording = RecordingLogger()
    monitor = Monitor(
        max_overhead=None, group="C4", field_type=["scalar"], probe_size=5, probe_seed=3
    )
    _fit(monitor, data=PlainData(), logger=recording)
    assert monitor.state_dict()["probe"]["source"] == "val_dataloader"
    assert len(monitor.state_dict()["probe"]["indices"]) == 5
    assert sorted(recording.values("coherence/C4/orbit")) == [0, 4]  # at the start, end of epoch


# ---------------------------------------------------------------- failure policy
def _nan_loss(prediction, target):
    return sc.smse(prediction, target) * float("nan")


def _broken_loss(prediction, target):
    raise RuntimeError("loss exploded")


@pytest.mark.parametrize(
    ("loss_fn", "reason"), [(_nan_loss, "non-finite"), (_broken_loss, "loss exploded")]
)
def test_failures_warn_log_nothing_and_training_goes_on(loss_fn, reason):
    recording = RecordingLogger()
    monitor = Monitor(max_overhead=None, every_n_train_steps=2, probe_size=4, loss_fn=loss_fn)
    with pytest.warns(UserWarning, match=f"could not measure at step [024]: rank 0: .*{reason}"):
        fit = _fit(monitor, logger=recording)
    assert fit.global_step == 4  # training went on
    assert not [k for _, m in recording.records for k in m if "D4" in k]
    assert all(math.isfinite(v) for _, m in recording.records for v in m.values())


def test_on_error_raise_stops_training():
    with pytest.raises(MeasurementError, match="loss exploded"):
        _fit(
            Monitor(
                max_overhead=None,
                every_n_train_steps=2,
                probe_size=4,
                loss_fn=_broken_loss,
                on_error="raise",
            )
        )


# ---------------------------------------------------------------- resume
# The resumed run leaves out the ModelCheckpoint that wrote the checkpoint, and Lightning says so.
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`:UserWarning")
def test_resumed_run_logs_the_same_values_at_the_same_steps(tmp_path):
    def monitors():
        return [
            Monitor(max_overhead=None, every_n_train_steps=3, probe_size=4),
            Monitor(max_overhead=None, group="C4", every_n_epochs=1, probe_size=4),
        ]

    torch.manual_seed(0)
    whole = RecordingLogger()
    trainer(monitors(), logger=whole, max_epochs=2).fit(TinyModule(), datamodule=TinyData())

    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer([*monitors(), checkpoint], max_epochs=1, enable_checkpointing=True).fit(
        TinyModule(), datamodule=TinyData()
    )
    stored = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert {
        "OrbitCoherenceMonitor{'group': 'D4', 'prefix': ''}",
        "OrbitCoherenceMonitor{'group': 'C4', 'prefix': ''}",
    } <= set(stored)

    resumed = RecordingLogger()
    second = monitors()
    trainer(second, logger=resumed, max_epochs=2).fit(
        TinyModule(), datamodule=TinyData(), ckpt_path=tmp_path / "last.ckpt"
    )
    assert (
        second[0].state_dict()["probe"]["sha256"]
        == stored["OrbitCoherenceMonitor{'group': 'D4', 'prefix': ''}"]["probe"]["sha256"]
    )
    for key in (
        "coherence/D4/orbit",
        "coherence/D4/ratio/r",
        "coherence/C4/orbit",
        "equivariance/C4/r/q3",
    ):
        expected = {s: v for s, v in whole.values(key).items() if s > 4}
        assert sorted(resumed.values(key)) == sorted(expected) and expected
        assert resumed.values(key) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("strategy", ["FSDPStrategy", "DeepSpeedStrategy"])
def test_fsdp1_and_deepspeed_are_refused_at_setup_naming_fsdp2(strategy):
    # Lightning runs FSDP1 and DeepSpeed only on CUDA devices, so the refusal is tested at the
    # hook it lives in, with a strategy object of that class
    import lightning.pytorch.strategies as strategies

    cls = getattr(strategies, strategy)
    stand_in = type(
        "T", (), {"strategy": cls.__new__(cls), "datamodule": TinyData(), "loggers": []}
    )
    with pytest.raises(ValueError, match=rf"{strategy}.*ModelParallelStrategy.*fully_shard"):
        Monitor(max_overhead=None).setup(stand_in(), TinyModule(), "fit")
