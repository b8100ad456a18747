"""The early warning: the start firing, the early schedule, probes as training sees them, and the
verdict as a timeline, read back from real TensorBoard event files."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.tiny import RecordingLogger, TinyData, TinyModule, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

import symcoherence as sc
from symcoherence.callbacks import EarlySchedule, FiringSchedule, Timeline
from symcoherence.coherence import DecisionRule

D4 = sc.groups.D4().elements


def Monitor(**kwargs):  # noqa: N802 - the monitor, with the budget off unless a test sets it
    return sc.OrbitCoherenceMonitor(**{"max_overhead": None, **kwargs})


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _texts(events: EventAccumulator, tag: str) -> dict[int, str]:
    # SummaryWriter.add_text stores the text under "{tag}/text_summary"
    found = events.Tensors(f"{tag}/text_summary")
    return {e.step: e.tensor_proto.string_val[0].decode() for e in found}


def _direct(module, probe_size, seed=0):
    """The monitor's numbers, computed here without Lightning on ``module``'s current weights."""
    inputs, targets = TinyData().probe_batch(probe_size, seed=seed)
    kinds, group = sc.FieldType(["scalar"]), sc.groups.D4()
    model = module.backbone.eval()
    influence = sc.orbit_influence(model, sc.smse, inputs, targets, group, kinds)
    errors = sc.equivariance_error(model, sc.smse, inputs, targets, group, kinds)
    return {
        k: v for k, v in influence.summary(equivariance=errors).items() if "measurement/" not in k
    }


# ---------------------------------------------------------------- the start firing
def test_a_real_run_first_logs_step_0_with_the_initialized_model(tmp_path, tol):
    torch.manual_seed(0)
    module = TinyModule()
    initialized = copy.deepcopy(module)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    monitor = Monitor(every_n_train_steps=3, every_n_epochs=None, probe_size=6)
    trainer([monitor], logger=logger, max_epochs=1).fit(module, datamodule=TinyData())
    logger.experiment.flush()
    events = _events(tmp_path / "tb" / "version_0")
    orbit = events.Scalars("coherence/D4/orbit")
    assert [e.step for e in orbit] == [0, 3]
    first_loss_step = min(e.step for e in events.Scalars("train_loss"))
    assert first_loss_step == 0  # the start firing is logged at the step of the first loss
    expected = _direct(initialized, 6)
    for key, value in expected.items():
        (event,) = [e for e in events.Scalars(key) if e.step == 0]
        assert event.value == pytest.approx(value, rel=tol["fp32"]["rtol"], abs=1e-6), key
    # a later firing measures trained weights, not the initialized ones
    ratio = {e.step: e.value for e in events.Scalars("coherence/D4/ratio/r")}
    assert ratio[3] != pytest.approx(ratio[0], rel=1e-4)


def test_at_start_false_waits_for_the_schedule():
    recording = RecordingLogger()
    monitor = Monitor(at_start=False, every_n_train_steps=2, every_n_epochs=None, probe_size=4)
    trainer([monitor], logger=recording, max_epochs=1).fit(TinyModule(), datamodule=TinyData())
    assert sorted(recording.values("coherence/D4/orbit")) == [2, 4]


# resuming writes its checkpoints next to the one it resumed from, as a user's run would
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`:UserWarning")
def test_after_resume_the_start_firing_measures_the_resumed_model_and_the_schedule_goes_on(
    tmp_path,
):
    always = DecisionRule("transfer", 10.0)  # τ ≈ 1 here: every element flagged at every firing

    def monitors():
        return [
            Monitor(every_n_train_steps=3, every_n_epochs=None, probe_size=4, rule=always),
            Monitor(prefix="ref/", every_n_train_steps=1, every_n_epochs=None, probe_size=4),
        ]

    torch.manual_seed(0)
    whole = RecordingLogger()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    trainer([*monitors(), checkpoint], logger=whole, max_epochs=2, enable_checkpointing=True).fit(
        TinyModule(), datamodule=TinyData()
    )
    assert sorted(whole.values("coherence/D4/orbit")) == [0, 3, 6]

    resumed, second = RecordingLogger(), monitors()
    (saved,) = tmp_path.glob("*step=4.ckpt")
    trainer(second, logger=resumed, max_epochs=2).fit(
        TinyModule(), datamodule=TinyData(), ckpt_path=saved
    )
    # the first monitor last measured step 3: its start firing measures the resumed step 4 ...
    assert sorted(resumed.values("coherence/D4/orbit")) == [4, 6]
    # ... with the values the uninterrupted run's every-step monitor logged at step 4
    for key in ("coherence/D4/orbit", "coherence/D4/transfer/r", "equivariance/D4/r/q3"):
        assert resumed.values(key)[4] == pytest.approx(whole.values(f"ref/{key}")[4], rel=1e-6)
        assert resumed.values(key)[6] == pytest.approx(whole.values(key)[6], rel=1e-6)
    # the second had measured step 4 before the checkpoint was written: no second point there
    assert sorted(resumed.values("ref/coherence/D4/orbit")) == [5, 6, 7, 8]
    # the timeline went on from the checkpoint: flagged since step 0, held
    assert resumed.values("coherence/D4/first_flagged/r") == {4: 0.0, 6: 0.0}
    assert resumed.values("coherence/D4/flag_held/r") == {4: 1.0, 6: 1.0}


def test_with_the_adam_metric_the_start_firing_waits_for_the_first_second_moments():
    recording = RecordingLogger()
    monitor = Monitor(metric="adam", every_n_train_steps=3, every_n_epochs=None, probe_size=4)
    trainer([monitor], logger=recording, max_epochs=1).fit(TinyModule(), datamodule=TinyData())
    assert sorted(recording.values("coherence/D4/orbit")) == [1, 3]


# ---------------------------------------------------------------- the early schedule
def test_the_early_schedule_is_log_spaced_and_pure():
    assert EarlySchedule(until=100).steps == (0, 1, 2, 4, 8, 16, 32, 64)
    assert EarlySchedule(until=10, base=1.5).steps == (0, 1, 2, 3, 4, 6, 8)
    assert len(EarlySchedule(until=1024)) == 12  # 2 + log2(T)
    assert EarlySchedule(steps=[5, 0, 5]).steps == (0, 5)
    assert EarlySchedule(until=8).next_after(8) is None
    assert EarlySchedule(until=8).overhead(
        firing_seconds=2.0, step_seconds=0.1, total_steps=100
    ) == (pytest.approx(5 * 2.0 / (100 * 0.1)))
    with pytest.raises(ValueError, match="either until=T"):
        EarlySchedule(until=4, steps=[1])
    with pytest.raises(ValueError, match="base must be a number > 1"):
        EarlySchedule(until=4, base=1.0)


def test_a_run_fires_where_the_pure_schedule_says():
    recording = RecordingLogger()
    monitor = Monitor(early_schedule=4, every_n_train_steps=3, every_n_epochs=2, probe_size=4)
    trainer([monitor], logger=recording, max_epochs=4).fit(TinyModule(), datamodule=TinyData())
    fired = sorted(recording.values("coherence/D4/orbit"))
    plan = FiringSchedule(True, EarlySchedule(until=4), every_n_train_steps=3, every_n_epochs=2)
    assert (
        fired
        == plan.steps(total_steps=16, steps_per_epoch=4)
        == [0, 1, 2, 3, 4, 6, 8, 9, 12, 15, 16]
    )
    assert monitor.schedule == plan


class FakeClock:
    """Training steps take 1 s and a firing 3 s, whatever the machine does."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_early_firings_ignore_the_budget_which_then_spaces_the_regular_ones():
    import lightning.pytorch as pl

    clock = FakeClock()

    class Tick(pl.Callback):
        def on_train_batch_end(self, *args):
            clock.now += 1.0

    monitor = Monitor(
        early_schedule=8, every_n_train_steps=1, every_n_epochs=None, probe_size=4, max_overhead=0.5
    )
    original = monitor.measure

    def timed(trainer, pl_module):
        clock.now += 3.0
        return original(trainer, pl_module)

    monitor.measure, monitor.budget.clock = timed, clock
    recording = RecordingLogger()
    trainer([Tick(), monitor], logger=recording, max_epochs=6).fit(
        TinyModule(), datamodule=TinyData()
    )
    fired = sorted(recording.values("coherence/D4/orbit"))
    # every early step fires (the budget alone would have waited 6 steps after each firing); the
    # firing at step 8 sets the interval 3 s / (0.5 × 1 s) = 6, and the budget takes over
    assert fired == [0, 1, 2, 4, 8, 14, 20]
    assert recording.values("measurement/D4/interval_steps")[8] == 6.0


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`:UserWarning")
def test_the_early_schedule_continues_after_resume(tmp_path):
    def monitor():
        return Monitor(early_schedule=16, every_n_epochs=None, probe_size=4)

    torch.manual_seed(0)
    whole = RecordingLogger()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1)
    trainer([monitor(), checkpoint], logger=whole, max_epochs=5, enable_checkpointing=True).fit(
        TinyModule(), datamodule=TinyData()
    )
    assert sorted(whole.values("coherence/D4/orbit")) == [0, 1, 2, 4, 8, 16]
    resumed = RecordingLogger()
    (saved,) = tmp_path.glob("*step=4.ckpt")
    trainer([monitor()], logger=resumed, max_epochs=5).fit(
        TinyModule(), datamodule=TinyData(), ckpt_path=saved
    )
    after = resumed.values("coherence/D4/ratio/r")
    assert sorted(after) == [8, 16]  # step 4 was measured before the checkpoint: not again
    for step in (8, 16):
        assert after[step] == pytest.approx(whole.values("coherence/D4/ratio/r")[step], rel=1e-6)


# ---------------------------------------------------------------- the verdict as a timeline
def test_the_timeline_records_first_flag_current_flag_and_whether_it_held():
    timeline = Timeline()
    readings = [
        (0, {"r": True, "s": False, "sr": None}),
        (1, {"r": True, "s": True, "sr": True}),
        (2, {"r": True, "s": False, "sr": None}),
        (4, {"r": True, "s": True, "sr": True}),
    ]
    for step, flags in readings:
        timeline.update(step, flags)
    timeline.update(2, {"r": False})  # an older step (re-measured after resume) changes nothing
    assert timeline.first_flagged == {"r": 0, "s": 1, "sr": 1}
    assert timeline.held == {"r": True, "s": False, "sr": False}  # undefined does not confirm
    assert timeline.flagged_since == {"r": 0, "s": 4, "sr": 4}
    restored = Timeline()
    restored.load_state_dict(timeline.state_dict())
    assert restored.scalars("D4", "p/") == timeline.scalars("D4", "p/")
    assert timeline.scalars("D4")["coherence/D4/flag_held/s"] == 0.0


def test_timeline_keys_and_the_text_verdict_are_in_the_event_files(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    monitor = Monitor(
        every_n_train_steps=2,
        every_n_epochs=None,
        probe_size=6,
        rule=DecisionRule("transfer", 10.0),  # τ ≈ 1: the whole interval is below 10
        log_figures=False,
    )
    trainer([monitor], logger=logger, max_epochs=1).fit(TinyModule(), datamodule=TinyData())
    logger.experiment.flush()
    events = _events(tmp_path / "tb" / "version_0")
    for element in D4[1:]:
        for field, value in (("first_flagged", 0.0), ("flag_held", 1.0), ("flagged_since", 0.0)):
            logged = {e.step: e.value for e in events.Scalars(f"coherence/D4/{field}/{element}")}
            assert logged == {0: value, 2: value, 4: value}, (field, element)
    texts = _texts(events, "verdict/D4")
    assert sorted(texts) == [0, 2, 4]
    first = texts[0].splitlines()[0]
    assert first == (
        "step 0: learning from the probes does not reach r, r2, r3, s, sr, sr2, sr3 (τ < 10 at 90 %)"
    )
    assert "held at every firing" in texts[4]
    assert "What a flag means" in texts[0] and "What it does not mean" in texts[0]
    assert "6 val probes" in texts[0] and "not a measured failure" in texts[0]
    assert monitor.state_dict()["timeline"]["first_flagged"] == dict.fromkeys(D4[1:], 0)


def test_an_exactly_equivariant_model_is_flagged_nowhere_and_says_so(tmp_path):
    from helpers.tiny import tiny_backbone

    from symcoherence.models import GroupAveraged

    backbone = GroupAveraged(tiny_backbone(), sc.groups.D4(), sc.FieldType(["scalar"]))
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    monitor = Monitor(every_n_epochs=None, at_start=True, probe_size=6, log_figures=False)
    trainer([monitor], logger=logger, max_epochs=1, precision="64-true").fit(
        TinyModule(backbone), datamodule=TinyData()
    )
    logger.experiment.flush()
    events = _events(tmp_path / "tb" / "version_0")
    assert not [t for t in events.Tags()["scalars"] if "flag" in t]  # no element ever flagged
    (text,) = _texts(events, "verdict/D4").values()
    assert text.startswith("step 0: the rule flags no element (no τ interval below 0.5 at 90 %)")


# ---------------------------------------------------------------- probes as training sees them
def _emulator_data(augment_group):
    from symcoherence.data import ArraySource, TrajectoryDataModule

    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(24, 3, 1, 8, 8, generator=generator)
    source = ArraySource(frames, ["pseudoscalar"], symmetry_group="D4")
    return TrajectoryDataModule(
        source, batch_size=4, val_fraction=0.25, augment_group=augment_group, progress=False
    )


def _emulator():
    from symcoherence.models import EmulatorModule

    backbone = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    return EmulatorModule(backbone, rollout_horizon=0, log_images=False)


@pytest.mark.parametrize("augment_group", ["D4", None])
def test_train_probes_go_through_the_datamodules_augmentation(augment_group):
    data = _emulator_data(augment_group)
    recording = RecordingLogger()
    monitor = Monitor(probe_split="train", probe_size=8, every_n_epochs=None, log_figures=False)
    trainer([monitor], logger=recording, max_epochs=1, limit_train_batches=1).fit(
        _emulator(), datamodule=data
    )
    assert sorted(recording.values("coherence/D4/orbit")) == [0]
    inputs, targets = monitor._probe
    plain_x, plain_y = data.probe_batch(8, split="train", seed=0)
    identity = monitor.state_dict()["probe"]
    if augment_group is None:  # nothing to go through: the training split as it is
        assert torch.equal(inputs, plain_x) and "transform" not in identity
        return
    assert identity["transform"] == "D4 augmentation (augment_group of the datamodule)"
    kinds, group, used = sc.FieldType(["pseudoscalar"]), sc.groups.D4(), []
    for n in range(8):  # every probe is one element of D4 applied to a training pair
        (element,) = [
            g
            for g in D4
            if torch.equal(group.act(g, plain_x[n], kinds), inputs[n])
            and torch.equal(group.act(g, plain_y[n], kinds), targets[n])
        ][:1]
        used.append(element)
    assert len(set(used)) > 1  # drawn per probe, not one element for all
    again = Monitor(probe_split="train", probe_size=8)  # the same draw on another rank or resume
    trainer([again], max_epochs=1, limit_train_batches=1).fit(_emulator(), datamodule=data)
    assert again.state_dict()["probe"]["sha256"] == identity["sha256"]


def test_a_datamodule_augment_hook_and_a_probe_transform_are_used():
    calls = []

    class Augmenting(TinyData):
        def augment(self, inputs, targets, generator):
            calls.append(generator.initial_seed())
            return -inputs, -targets

    monitor = Monitor(probe_split="train", probe_size=4, every_n_epochs=None)
    trainer([monitor], max_epochs=1, limit_train_batches=1).fit(
        TinyModule(), datamodule=Augmenting()
    )
    assert torch.equal(monitor._probe[0], -TinyData().probe_batch(4, split="train")[0])
    assert monitor.state_dict()["probe"]["transform"] == "the datamodule's augment()"

    def flip(inputs, targets, generator):
        return inputs.flip(-1), targets.flip(-1)

    monitor = Monitor(probe_transform=flip, probe_size=4, every_n_epochs=None)  # any split
    trainer([monitor], max_epochs=1, limit_train_batches=1).fit(TinyModule(), datamodule=TinyData())
    assert torch.equal(monitor._probe[0], TinyData().probe_batch(4)[0].flip(-1))

    bad = Monitor(probe_transform=lambda x, y, g: (x[:2], y), probe_size=4, every_n_epochs=None)
    with pytest.raises(ValueError, match="changed the probe shapes .* must keep them"):
        trainer([bad], max_epochs=1, limit_train_batches=1).fit(TinyModule(), datamodule=TinyData())


class RandomlyFlipped(Dataset):
    """Augments in ``__getitem__`` with the global RNG, as many users' datasets do."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs[0])

    def __getitem__(self, index):
        x, y = self.pairs[0][index], self.pairs[1][index]
        if torch.rand(()) < 0.5:
            return x.flip(-1), y.flip(-1)
        return x, y


def test_probes_from_a_dataset_that_augments_with_the_global_rng_are_reproducible():
    def probe(global_seed):
        data = TinyData()
        data.probe_batch = None
        data.train_dataloader = lambda: DataLoader(RandomlyFlipped(data.train_pairs), batch_size=4)
        monitor = Monitor(probe_split="train", probe_size=8, every_n_epochs=None)
        torch.manual_seed(global_seed)  # whatever state training left the global RNG in
        trainer([monitor], max_epochs=1, limit_train_batches=1).fit(TinyModule(), datamodule=data)
        return monitor._probe[0]

    first, second = probe(0), probe(1)
    assert torch.equal(first, second)
    plain = TinyData().train_pairs[0]
    assert any(not any(torch.equal(x, p) for p in plain) for x in first)  # some were flipped
