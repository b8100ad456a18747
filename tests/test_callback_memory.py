"""The monitor's memory budget: bytes or a fraction of the free memory, logged with the chunk."""

import pytest
import torch
from helpers.tiny import RecordingLogger, TinyData, TinyModule, trainer

import symcoherence as sc
from symcoherence.coherence.gradients import memory

MIB = 2**20


def _run(monitor, steps=2):
    torch.manual_seed(0)  # the same initialization in every run
    recording = RecordingLogger()
    fit = trainer([monitor], logger=recording, max_steps=steps, max_epochs=-1)
    fit.fit(TinyModule(), datamodule=TinyData())
    return recording


def test_a_budget_in_bytes_is_logged_with_the_chunk_it_allowed():
    wide = _run(sc.OrbitCoherenceMonitor(every_n_train_steps=1, probe_size=6, max_overhead=None))
    narrow = _run(
        sc.OrbitCoherenceMonitor(
            every_n_train_steps=1, probe_size=6, max_overhead=None, max_memory=20_000
        )
    )
    assert set(narrow.values("measurement/D4/memory_budget").values()) == {20_000.0}
    chunks = narrow.values("measurement/D4/chunk_size")
    assert chunks and max(chunks.values()) < 6 == max(
        wide.values("measurement/D4/chunk_size").values()
    )
    for key in ("coherence/D4/ratio/r", "coherence/D4/transfer/sr"):  # the chunk changes no number
        assert narrow.values(key) == pytest.approx(wide.values(key), rel=1e-5, abs=1e-6)


def test_a_fraction_is_taken_of_the_free_memory_and_kept_after_the_first_step(monkeypatch):
    free = iter([400 * MIB, 800 * MIB, 1600 * MIB, 3200 * MIB])
    monkeypatch.setattr(memory, "_cpu_available", lambda: next(free))
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, probe_size=6, max_overhead=None, max_memory=0.5
    )
    logged = _run(monitor, steps=3).values("measurement/D4/memory_budget")
    # step 0 reads the free memory before training ran; step 1 reads it again and keeps it
    assert logged == {0: 200.0 * MIB, 1: 400.0 * MIB, 2: 400.0 * MIB, 3: 400.0 * MIB}
    assert monitor.spec.max_memory == 400 * MIB


def test_a_firing_that_does_not_fit_warns_naming_the_fixes():
    monitor = sc.OrbitCoherenceMonitor(
        every_n_train_steps=1, probe_size=6, max_overhead=None, max_memory=100
    )
    with pytest.warns(UserWarning, match="max_memory.*projection.*probe_size"):
        recording = _run(monitor, steps=1)
    assert recording.values("coherence/D4/orbit") == {}


@pytest.mark.parametrize("bad", [0, 1.5, "1GB"])
def test_a_bad_budget_is_refused_at_construction(bad):
    with pytest.raises(ValueError, match="max_memory"):
        sc.OrbitCoherenceMonitor(max_memory=bad)
