"""OrbitCoherenceMonitor in real (tiny, CPU) Trainer runs: logging, schedule, known answers, errors."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from helpers.tiny import (
    RecordingLogger,
    TinyData,
    TinyModule,
    tiny_backbone,
    trainer,
)
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import symcoherence as sc
from symcoherence.callbacks._isolation import isolated
from symcoherence.models import GroupAveraged

D4 = sc.groups.D4().elements


def expected_keys(group="D4", elements=D4, prefix=""):
    """Spelled out here (not built with Keys) so that a renamed key fails the test."""
    keys = {f"{prefix}coherence/{group}/orbit", f"{prefix}basin/{group}/suppressed"}
    keys.add(f"{prefix}basin/{group}/compatibility")
    keys |= {f"{prefix}coherence/{group}/compatibility{b}" for b in ("_lo", "_hi")}
    keys.add(f"{prefix}coherence/{group}/ratio_baseline")
    keys |= {f"{prefix}measurement/{group}/{h}" for h in ("degenerate_rows", "seconds")}
    for e in elements:
        keys |= {f"{prefix}influence/{group}/{e}/{q}" for q in ("median", "q1", "q3")}
        keys |= {f"{prefix}equivariance/{group}/{e}/{q}" for q in ("median", "q3")}
        keys.add(f"{prefix}coherence/{group}/ratio_baseline/{e}")
        for statistic in ("ratio", "coupling", "transfer"):
            keys |= {f"{prefix}coherence/{group}/{statistic}{b}/{e}" for b in ("", "_lo", "_hi")}
    return keys


def fired(logger: RecordingLogger, key="basin/D4/compatibility") -> dict[int, float]:
    return logger.values(key)


# ---------------------------------------------------------------- state key
def test_state_key_names_the_resolved_group_and_prefix_and_is_cached():
    explicit = sc.OrbitCoherenceMonitor(max_overhead=None, group="C4", prefix="a/")
    assert explicit.state_key == "OrbitCoherenceMonitor{'group': 'C4', 'prefix': 'a/'}"
    assert explicit.state_key is explicit.state_key

    default = sc.OrbitCoherenceMonitor(max_overhead=None)
    assert default.state_key == "OrbitCoherenceMonitor{'group': 'datamodule', 'prefix': ''}"
    data = TinyData()
    default.setup(type("T", (), {"datamodule": data, "loggers": []})(), TinyModule(), "fit")
    name = data.symmetry_group.name
    assert default.state_key == f"OrbitCoherenceMonitor{{'group': '{name}', 'prefix': ''}}"


# ---------------------------------------------------------------- logging
def test_tensorboard_event_files_hold_scalars_images_histograms_layout_and_hparams(tmp_path):
    recording = RecordingLogger()
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version=0)
    monitor = sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6)
    trainer([monitor], logger=[recording, tensorboard], max_epochs=1).fit(
        TinyModule(), datamodule=TinyData()
    )
    tensorboard.experiment.flush()

    events = EventAccumulator(
        str(tmp_path / "tb" / "version_0"),
        size_guidance={"tensors": 0, "images": 0, "histograms": 0, "scalars": 0},
    )
    events.Reload()
    tags = events.Tags()
    assert expected_keys() <= set(tags["scalars"])
    for key in expected_keys():  # written once per firing, with the values every logger got
        logged = {e.step: e.value for e in events.Scalars(key)}
        assert sorted(logged) == [0, 2, 4]  # at the start, then every 2 steps
        for step, value in recording.values(key).items():
            assert logged[step] == pytest.approx(value, rel=1e-6)
    figures = {f"influence/D4/figure/{s}" for s in ("transfer", "ratio", "coupling", "heatmap")}
    assert figures | {"influence/D4/figure/equivariance"} <= set(tags["images"])
    assert len(events.Images("influence/D4/figure/heatmap")) == 3
    assert {f"influence/D4/{e}" for e in D4} <= set(tags["histograms"])
    assert events.Histograms("influence/D4/r")[0].histogram_value.num == 6
    # the loss at every firing after the first step, beside the verdict in the landing section
    assert sorted(events.Scalars("basin/D4/loss/train_loss")[i].step for i in (0, 1)) == [2, 4]

    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    configs = events.Tensors("custom_scalars__config__")
    assert len(configs) == 1  # written once
    layout = layout_pb2.Layout.FromString(configs[0].tensor_proto.string_val[0])
    landing, others = layout.category
    assert landing.title == "basin/D4: loss and verdict"
    assert [c.title.split(" ")[0] for c in landing.chart] == [
        "loss", "distribution", "flagged", "basin", "step"
    ]  # fmt: skip
    loss_chart, transfer_chart = landing.chart[:2]
    assert loss_chart.multiline.tag == ["^(?!(.*/)?basin/).*loss[^/]*$"]
    assert re.search(loss_chart.multiline.tag[0], "train/loss")
    assert not re.search(loss_chart.multiline.tag[0], "basin/D4/loss/train_loss")
    (series,) = transfer_chart.margin.series
    assert (series.value, series.lower, series.upper) == (
        "basin/D4/transfer", "elements/D4/transfer_lo", "elements/D4/transfer_hi"
    )  # fmt: skip
    compatibility = landing.chart[3].margin.series[0]
    for tag in (compatibility.value, compatibility.lower, compatibility.upper):
        assert tag in tags["scalars"]  # the margin charts reference tags that exist
    assert others.title == "coherence/D4: the other statistics"
    ratio_chart = next(c for c in others.chart if "ratio" in c.title)
    assert ratio_chart.title.startswith("the paper's coherence ratio")
    # ... one run per element, each logging those tags: a line of its own colour and name
    for element in D4:
        runs = EventAccumulator(str(tmp_path / "tb" / "version_0" / f"D4_{element}"))
        runs.Reload()
        run_tags = set(runs.Tags()["scalars"])
        for margin in (series, ratio_chart.margin.series[0]):
            assert {margin.value, margin.lower, margin.upper} <= run_tags
        transfer = {e.step: e.value for e in runs.Scalars("basin/D4/transfer")}
        assert transfer == pytest.approx(recording.values(f"coherence/D4/transfer/{element}"))
        ratio = {e.step: e.value for e in runs.Scalars("elements/D4/ratio")}
        assert ratio == pytest.approx(recording.values(f"coherence/D4/ratio/{element}"))

    # TensorBoard's HParams dashboard shows the first session of a run: it must be the monitor's
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (path,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    sessions = [
        plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag == "_hparams_/experiment"
    ]
    metrics = {m.name.tag: m.display_name for m in sessions[0].experiment.metric_infos}
    assert list(metrics) == ["basin/D4/compatibility", "basin/D4/suppressed", "coherence/D4/orbit"]
    assert "transfer" in metrics["basin/D4/compatibility"]
    assert "the paper's" in metrics["coherence/D4/orbit"]


def test_any_logger_gets_the_scalars_and_callback_metrics_are_set():
    recording = RecordingLogger()
    monitor = sc.OrbitCoherenceMonitor(
        max_overhead=None, every_n_train_steps=3, every_n_epochs=None, probe_size=4, prefix="probe/"
    )
    fit = trainer([monitor], logger=recording, max_epochs=2)
    fit.fit(TinyModule(), datamodule=TinyData())
    steps = [s for s, m in recording.records if "probe/coherence/D4/orbit" in m]
    assert steps == [0, 3, 6]  # at the start, then by optimizer steps only, once each
    assert expected_keys(prefix="probe/") <= set(fit.callback_metrics)
    assert all(math.isfinite(v) for _, m in recording.records for v in m.values())


def test_epoch_schedule_and_gradient_accumulation_count_optimizer_steps():
    recording = RecordingLogger()
    monitors = [
        sc.OrbitCoherenceMonitor(
            max_overhead=None,
            every_n_train_steps=1,
            every_n_epochs=None,
            probe_size=4,
            equivariance=False,
        ),
        sc.OrbitCoherenceMonitor(
            max_overhead=None, group="C4", every_n_epochs=2, probe_size=4, equivariance=False
        ),
    ]
    trainer(monitors, logger=recording, max_epochs=4, accumulate_grad_batches=2).fit(
        TinyModule(), datamodule=TinyData()
    )
    assert sorted(recording.values("coherence/D4/orbit")) == list(range(9))  # 2 steps per epoch
    assert sorted(recording.values("coherence/C4/orbit")) == [0, 4, 8]  # ends of epochs 2 and 4


def test_measuring_from_a_validation_hook_leaves_inference_mode():
    monitor = sc.OrbitCoherenceMonitor(max_overhead=None, every_n_epochs=10**6, probe_size=4)

    class Measuring(TinyModule):
        def on_validation_epoch_end(self):
            assert not torch.is_grad_enabled()
            with torch.inference_mode():  # what trainer.validate() runs under
                self.measured = monitor.measure(self.trainer, self)

    module = Measuring()
    trainer([monitor], max_epochs=1).fit(module, datamodule=TinyData())
    assert expected_keys() <= set(module.measured)


# ---------------------------------------------------------------- known answer
def test_group_averaged_model_has_ratio_one_for_every_element(tol):
    backbone = GroupAveraged(tiny_backbone(), sc.groups.D4(), sc.FieldType(["scalar"]))
    recording = RecordingLogger()
    monitor = sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6)
    trainer([monitor], logger=recording, max_epochs=1, precision="64-true").fit(
        TinyModule(backbone), datamodule=TinyData()
    )
    assert sorted(fired(recording)) == [0, 2, 4]
    for element in D4:
        for key in (f"coherence/D4/ratio/{element}", f"equivariance/D4/{element}/median"):
            values = torch.tensor(list(recording.values(key).values()), dtype=torch.float64)
            torch.testing.assert_close(values, torch.ones(3, dtype=torch.float64), **tol["fp64"])


def test_non_equivariant_model_has_intervals_that_exclude_ratio_one():
    # Under the cosine normalization I_n(g) = cos(b_n^g, a_n) and I_n(e) = 1, so an equivariant
    # model gives ρ = 1 exactly; zero padding breaks every element, and the whole 90 % interval
    # must lie below 1 (the margin is the interval, not round-off).
    recording = RecordingLogger()
    module = TinyModule(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 1)))
    monitor = sc.OrbitCoherenceMonitor(max_overhead=None, probe_size=8, normalization="cosine")
    trainer([monitor], logger=recording, max_epochs=1).fit(module, datamodule=TinyData())
    for element in D4[1:]:
        assert recording.values(f"coherence/D4/ratio_hi/{element}")[4] < 0.999


# ---------------------------------------------------------------- non-interference
def _training_run(with_monitor: bool):
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - the global state is what the monitor must leave alone
    random.seed(0)
    backbone = nn.Sequential(tiny_backbone(), nn.Dropout(0.2))  # training consumes the RNG
    module = TinyModule(backbone)
    recording = RecordingLogger()
    callbacks = (
        [
            sc.OrbitCoherenceMonitor(
                max_overhead=None, every_n_train_steps=2, probe_size=4, metric="adam"
            )
        ]
        if with_monitor
        else []
    )
    data = TinyData()
    data.train_dataloader = lambda: torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*data.train_pairs), batch_size=4, shuffle=True
    )
    fit = trainer(callbacks, logger=recording, max_epochs=2)
    fit.fit(module, datamodule=data)
    losses = [m["train_loss"] for _, m in recording.records if "train_loss" in m]
    state = fit.optimizers[0].state_dict()["state"]
    return module, losses, state, recording, (torch.rand(3), np.random.rand(), random.random())  # noqa: NPY002


def test_training_is_bitwise_identical_with_and_without_the_monitor():
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        plain, plain_losses, plain_state, _, plain_rng = _training_run(False)
        watched, watched_losses, watched_state, recording, watched_rng = _training_run(True)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert sorted(fired(recording)) == [1, 2, 4, 6, 8]  # adam: the start firing waits for step 1
    assert plain_losses == watched_losses
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for key in plain_state:
        for name in plain_state[key]:
            assert torch.equal(
                torch.as_tensor(plain_state[key][name]), torch.as_tensor(watched_state[key][name])
            )
    assert torch.equal(plain_rng[0], watched_rng[0]) and plain_rng[1:] == watched_rng[1:]


def test_isolation_restores_modes_rng_and_gradients_even_when_the_measurement_raises():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    net[0].bias.requires_grad_(False)
    grad = net[0].weight.grad
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    with pytest.raises(RuntimeError, match="inside"), isolated(net, [optimizer], eval_mode=True):
        assert not net.training and torch.is_grad_enabled()
        torch.rand(5), np.random.rand(), random.random()  # noqa: NPY002
        net[0].weight.grad = None
        net[0].bias.requires_grad_(True)
        raise RuntimeError("inside")
    assert net.training and net[1].training and not net[0].bias.requires_grad
    assert net[0].weight.grad is grad
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1]) and random.getstate() == rng[2]  # noqa: NPY002


@pytest.mark.parametrize(
    ("write", "name"),
    [
        (lambda net, opt: net[0].weight.add_(1.0), "parameter '0.weight'"),
        (lambda net, opt: net[1].running_mean.add_(1.0), "buffer '1.running_mean'"),
        (
            lambda net, opt: opt.state[net[0].weight]["exp_avg_sq"].mul_(3.0),
            "optimizer 0 state 'exp_avg_sq'",
        ),
    ],
)
def test_isolation_names_any_tensor_training_owns_that_a_measurement_writes(write, name):
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    with pytest.raises(RuntimeError, match=f"wrote to {name}"), isolated(net, [optimizer], True):
        with torch.no_grad():
            write(net, optimizer)


def test_mixed_precision_training_is_measured_in_float32():
    recording = RecordingLogger()
    monitor = sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=4)
    trainer([monitor], logger=recording, max_epochs=1, precision="bf16-mixed").fit(
        TinyModule(), datamodule=TinyData()
    )
    monitor_probe = monitor._probe[0]
    assert monitor_probe.dtype == torch.float32
    assert sorted(fired(recording)) == [0, 2, 4]


# ---------------------------------------------------------------- projected gradients
def _projected_run(projection, metric="identity"):
    torch.manual_seed(0)
    recording = RecordingLogger()
    monitor = sc.OrbitCoherenceMonitor(
        max_overhead=None, probe_size=6, metric=metric, projection=projection, at_start=False
    )
    trainer([monitor], logger=recording, max_epochs=1).fit(TinyModule(), datamodule=TinyData())
    (values,) = [m for _, m in recording.records if "coherence/D4/orbit" in m]
    return {key: value for key, value in values.items() if key.startswith("coherence/")}


@pytest.mark.parametrize("metric", ["identity", "adam"])
def test_projection_reaches_the_monitor_and_is_exact_when_it_keeps_every_parameter(metric, tol):
    from symcoherence.coherence import Projection

    exact = _projected_run(None, metric)
    size = sum(p.numel() for p in tiny_backbone().parameters())
    kept = _projected_run(Projection(dim=size, seed=3), metric)
    assert kept.keys() == exact.keys()
    np.testing.assert_allclose([kept[k] for k in exact], [exact[k] for k in exact], **tol["fp32"])
    sketched = _projected_run(Projection(dim=8, seed=3), metric)
    assert max(abs(sketched[k] - exact[k]) for k in exact) > 1e-3  # the projection is applied


def test_projection_with_gauss_newton_is_refused_at_construction():
    from symcoherence.coherence import Projection

    with pytest.raises(ValueError, match="[Gg]auss"):
        sc.OrbitCoherenceMonitor(metric="gauss_newton", projection=Projection(dim=64))
