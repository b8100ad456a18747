"""OrbitCoherenceMonitor under Lightning DDP: 2 CPU processes on gloo, in a subprocess with a hard timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.tiny import TinyData, TinyModule

import symcoherence as sc

TESTS = Path(__file__).parent
SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import torch, torch.distributed as dist
    import symcoherence as sc
    from helpers.tiny import RecordingLogger, TinyData, TinyModule, trainer

    mode, out = sys.argv[1], sys.argv[2]

    def loss_fn(prediction, target):
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 1 and mode == "raise_strict":
            raise RuntimeError("rank 1 broke")
        if rank == 1 and mode == "mixed" and fit.global_step == 2:
            raise RuntimeError("rank 1 broke")
        if rank == 1 and mode == "mixed" and fit.global_step == 4:
            return sc.smse(prediction, target) * float("nan")
        return sc.smse(prediction, target)

    on_error = "raise" if mode == "raise_strict" else "warn"
    monitors = [sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6, loss_fn=loss_fn, on_error=on_error)]
    if mode == "ok":  # a metric that is not element-separable: every rank measures all elements
        subspace = sc.coherence.GaussNewton(solver="subspace")
        monitors.append(sc.OrbitCoherenceMonitor(max_overhead=None, every_n_train_steps=2, probe_size=6, metric=subspace, prefix="subspace/"))
    logger = RecordingLogger()
    fit = trainer(monitors, logger=logger, max_epochs=2, devices=2, strategy="ddp")
    module = TinyModule()
    result = {"warnings": [], "error": None, "measured": []}
    measure = monitors[0].measure

    def recorded(trainer, pl_module):  # what each rank's monitor computed, logged or not
        if trainer.global_step == 0 and trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), out + "/initial.pt")
        scalars = measure(trainer, pl_module)
        result["measured"].append([trainer.global_step, scalars])
        return scalars

    monitors[0].measure = recorded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit.fit(module, datamodule=TinyData())
        except Exception as err:
            result["error"] = type(err).__name__ + ": " + str(err)
        result["warnings"] = [str(w.message) for w in caught if "OrbitCoherenceMonitor" in str(w.message)]
    result["records"] = logger.records
    result["global_step"] = fit.global_step
    rank = fit.global_rank
    if rank == 0:
        torch.save(module.state_dict(), out + "/model.pt")
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    sys.exit(1 if result["error"] else 0)
    """
)


def _launch(mode: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict[int, dict]]:
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), OMP_NUM_THREADS="1"
    )
    env.pop("MASTER_PORT", None)
    done = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    results = {
        r: json.loads((tmp_path / f"rank{r}.json").read_text())
        for r in (0, 1)
        if (tmp_path / f"rank{r}.json").exists()
    }
    return done, results


@pytest.fixture(scope="module")
def ok_run(tmp_path_factory) -> tuple[dict[int, dict], torch.nn.Module, Path]:
    """One DDP run, two monitors: the default metric and subspace Gauss–Newton (prefix ``subspace/``)."""
    tmp_path = tmp_path_factory.mktemp("ddp_ok")
    done, results = _launch("ok", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    module = TinyModule()
    module.load_state_dict(torch.load(tmp_path / "model.pt"))
    return results, module.backbone.eval(), tmp_path


def _single_process(model, metric="identity", elements=None):
    inputs, targets = TinyData().probe_batch(6)
    kinds, group = sc.FieldType(["scalar"]), sc.groups.D4()
    influence = sc.orbit_influence(
        model, sc.smse, inputs, targets, group, kinds, elements=elements, metric=metric
    )
    errors = sc.equivariance_error(model, sc.smse, inputs, targets, group, kinds, elements=elements)
    return influence, errors


def _values(summary):
    """The measured values; the health entries (free memory, seconds) differ between runs."""
    return {k: v for k, v in summary.items() if "measurement/" not in k}


def _logged(results, key):
    return [(step, m) for step, m in results[0]["records"] if key in m]


def test_ddp_values_equal_a_single_process_measurement_and_are_logged_once(ok_run):
    results, model, _ = ok_run
    assert set(results) == {0, 1} and results[1]["records"] == []  # only rank 0 writes to loggers
    logged = _logged(results, "coherence/D4/orbit")
    assert [step for step, _ in logged] == [0, 2, 4]  # at the start, then every 2 steps, once each

    influence, errors = _single_process(model)
    expected = influence.summary(equivariance=errors)
    final = logged[-1][1]
    assert set(expected) <= set(final)
    for key, value in _values(expected).items():
        assert final[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_ddp_with_a_non_separable_metric_equals_a_single_process_measurement(ok_run):
    results, model, _ = ok_run
    logged = _logged(results, "subspace/coherence/D4/orbit")
    assert [step for step, _ in logged] == [0, 2, 4]
    metric = sc.coherence.GaussNewton(solver="subspace")
    influence, errors = _single_process(model, metric)
    expected = influence.summary(prefix="subspace/", equivariance=errors)
    final = logged[-1][1]
    assert set(expected) <= set(final)
    for key, value in _values(expected).items():
        assert final[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key

    # splitting the elements across the two ranks would have given other values
    halves = [
        _single_process(model, metric, half)[0]
        for half in (influence.elements[:4], influence.elements[4:])
    ]
    split = sc.OrbitInfluence.concatenate(halves).summary(prefix="subspace/")
    key = "subspace/coherence/D4/orbit"
    assert split[key] != pytest.approx(expected[key], rel=1e-3, abs=1e-3)


def test_the_start_firing_gives_the_same_values_on_both_ranks_and_one_process(ok_run, tmp_path):
    results, _, folder = ok_run
    starts = [dict(results[rank]["measured"])[0] for rank in (0, 1)]
    assert starts[0] == starts[1]  # every rank holds the same summary, bit for bit
    logged = {k: v for step, m in results[0]["records"] if step == 0 for k, v in m.items()}
    assert logged["coherence/D4/orbit"] == starts[0]["coherence/D4/orbit"]  # first logged step: 0

    initial = TinyModule()  # the parameters DDP broadcast from rank 0 before the first step
    initial.load_state_dict(torch.load(folder / "initial.pt"))
    influence, errors = _single_process(initial.backbone.eval())
    expected = influence.summary(equivariance=errors)
    assert set(expected) <= set(starts[0])
    for key, value in _values(expected).items():
        assert starts[0][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_a_failure_on_one_rank_makes_every_rank_skip_without_a_hang(tmp_path):
    # rank 1 raises at the firing of step 2 and produces NaN at the firing of step 4
    done, results = _launch("mixed", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {r["global_step"] for r in results.values()} == {4}  # both ranks trained to the end
    warnings = results[0]["warnings"]
    assert any("step 2: rank 1: RuntimeError: rank 1 broke" in w for w in warnings), warnings
    # a NaN loss on rank 1 gives non-finite gradients, which the engine refuses there
    assert any("step 4: rank 1: ValueError" in w and "non-finite" in w for w in warnings), warnings
    skipped = [k for step, m in results[0]["records"] if step > 0 for k in m if "D4" in k]
    assert not skipped  # the start firing (step 0) succeeded on both ranks


@pytest.mark.slow
def test_on_error_raise_stops_every_rank_without_a_hang(tmp_path):
    done, results = _launch("raise_strict", tmp_path)
    assert done.returncode != 0
    assert (
        "MeasurementError" in results[0]["error"]
        and "rank 1: RuntimeError: rank 1 broke" in results[0]["error"]
    )
    if 1 in results:  # rank 1 may be stopped by Lightning's launcher before it writes
        assert "MeasurementError" in results[1]["error"]
