"""The overhead budget: firings spaced by measured cost, deterministic schedule state, logging."""

import pytest
from helpers.tiny import RecordingLogger, TinyData, TinyModule, trainer

import symcoherence as sc
from symcoherence.callbacks._budget import OverheadBudget


class FakeClock:
    """Training steps take 1 s and a firing 3 s, whatever the machine does."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fit(monitor, clock, max_epochs=6, ckpt_path=None, callbacks=()):
    """A run in which every batch advances the fake clock by 1 s and every firing by 3 s."""
    import lightning.pytorch as pl

    class Tick(pl.Callback):
        def on_train_batch_end(self, *args):
            clock.now += 1.0

    original = monitor.measure

    def timed_measure(trainer, pl_module):
        clock.now += 3.0
        return original(trainer, pl_module)

    monitor.measure = timed_measure
    monitor.budget.clock = clock
    recording = RecordingLogger()
    fit = trainer(
        [Tick(), monitor, *callbacks],
        logger=recording,
        max_epochs=max_epochs,
        enable_checkpointing=bool(callbacks),
    )
    fit.fit(TinyModule(), datamodule=TinyData(), ckpt_path=ckpt_path)
    return recording, fit


def test_the_interval_is_firing_cost_over_budget_times_step_time():
    budget = OverheadBudget(0.1, clock=FakeClock())
    budget.clock.now = 0.0
    budget.start(0)
    budget.clock.now = 13.0  # 10 steps of 1 s, then a 3 s firing
    assert budget.record(10, 3.0) == 30  # 3 s / (0.1 × 1 s)
    assert not budget.allows(39) and budget.allows(40)
    assert OverheadBudget(None).allows(0)
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\)"):
        OverheadBudget(1.5)


def test_firings_are_spaced_so_that_the_monitor_stays_within_its_budget():
    clock = FakeClock()
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, every_n_epochs=None, probe_size=4, at_start=False, max_overhead=0.5
    )
    recording, _ = _fit(monitor, clock)
    fired = sorted(recording.values("coherence/D4/orbit"))
    # a 3 s firing over 0.5 × 1 s per step: 6 steps between firings, after the first at step 1
    assert fired == [1, 7, 13, 19]
    assert recording.values("measurement/D4/interval_steps")[7] == 6.0
    logged = [v for _, v in sorted(recording.values("measurement/D4/overhead").items())]
    assert logged == sorted(logged, reverse=True)  # the first firing's cost is paid off ...
    assert monitor.budget.overhead <= 0.5 + 1e-12  # ... to 12 s of monitor in 24 s of training
    unbudgeted = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, every_n_epochs=None, probe_size=4, at_start=False, max_overhead=None
    )
    recording, _ = _fit(unbudgeted, FakeClock())
    assert len(recording.values("coherence/D4/orbit")) == 24  # every step: 6 epochs × 4


def test_explicit_every_n_steps_stays_a_minimum_interval():
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=10, every_n_epochs=None, probe_size=4, at_start=False, max_overhead=0.9
    )
    recording, _ = _fit(monitor, FakeClock())
    assert sorted(recording.values("coherence/D4/orbit")) == [10, 20]


# resuming writes its checkpoints next to the one it resumed from, as a user's run would
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_a_resumed_run_continues_the_saved_schedule(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, every_n_epochs=None, probe_size=4, at_start=False, max_overhead=0.5
    )
    whole, _ = _fit(monitor, FakeClock(), callbacks=[checkpoint])
    first_epochs = sorted(tmp_path.glob("epoch=1*.ckpt"))[0]  # after 2 epochs, step 8
    again = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, every_n_epochs=None, probe_size=4, at_start=False, max_overhead=0.5
    )
    later = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    resumed, _ = _fit(again, FakeClock(), ckpt_path=str(first_epochs), callbacks=[later])
    assert again.state_dict()["budget"]["interval"] == 6
    steps = sorted(resumed.values("coherence/D4/orbit"))
    assert steps == [s for s in sorted(whole.values("coherence/D4/orbit")) if s > 8]


def test_every_firing_after_the_first_is_paid_by_the_training_that_follows_it():
    """The guarantee: with step time and firing cost steady, each budgeted firing of ``c`` seconds
    is followed by at least ``c / (β t_step)`` steps, so over the firings after the start firing
    and the first scheduled one, monitor time ≤ β × the training time they span (own clock)."""
    clock, beta = FakeClock(), 0.25
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, every_n_epochs=None, probe_size=4, max_overhead=beta
    )
    recording, fit = _fit(monitor, clock, max_epochs=10)
    fired = sorted(recording.values("coherence/D4/orbit"))
    assert fired[:2] == [0, 1]  # the start firing, then the first scheduled one: both taken
    # the start firing has no training time to be a share of: no overhead is logged for it
    assert 0 not in recording.values("measurement/D4/overhead")
    budgeted = fired[1:]
    for before, after in zip(budgeted, budgeted[1:], strict=False):
        assert 3.0 <= beta * (after - before) * 1.0  # 3 s paid by the 1 s steps in between
    monitor_after_first = 3.0 * (len(budgeted) - 1)
    training_after_first = (fit.global_step - budgeted[0]) * 1.0
    assert monitor_after_first <= beta * training_after_first
    # the monitor's own clock agrees: its share of the run tends to the budget from above
    assert monitor.budget.monitor_seconds == pytest.approx(3.0 * len(fired))
    assert beta < monitor.budget.overhead < beta + 3.0 * 2 / (fit.global_step * 1.0)
