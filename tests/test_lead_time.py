"""The lead-time protocol of experiments/lead_time.py: its bookkeeping on records with known
answers, and one run end to end at toy size (``--quick``: 8² grid, one seed and draw, 6 steps)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "lead_time.py"


def _load():
    spec = importlib.util.spec_from_file_location("lead_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


lead_time = _load()


def record(step, flags, errors, *, variant="anisotropic", seed=0, draw=0, metric="identity"):
    return {
        "variant": variant,
        "seed": seed,
        "draw": draw,
        "metric": metric,
        "probes": "val",
        "step": step,
        "elements": {g: {"flag": flags[g], "E_lo": errors[g], "transfer": 0.0} for g in flags},
    }


def test_a_flag_is_stable_only_if_it_holds_to_the_end():
    rows = [
        record(0, {"r": True, "s": True}, {"r": 1.0, "s": 1.0}),
        record(4, {"r": False, "s": True}, {"r": 1.2, "s": 1.0}),
        record(40, {"r": True, "s": True}, {"r": 2.0, "s": 1.0}),
        record(400, {"r": True, "s": False}, {"r": 3.0, "s": 1.0}),
    ]
    assert lead_time.stable_step(rows, "verdict", "r") == 40  # dropped at 4, held from 40
    assert lead_time.stable_step(rows, "verdict", "s") is None  # dropped at the end
    assert lead_time.stable_step(rows, "E rule", "r") == 40  # E_lo > 1.5 from step 40
    truth = lead_time.ground_truth(rows, final=400)
    assert truth[("anisotropic", 0)] == {"r"}
    leads, missed, only_verdict = lead_time.lead_times(rows, truth)
    assert (leads, missed, only_verdict) == ([0], 0, 0)


def test_lead_time_is_positive_when_the_verdict_comes_first_and_rates_count_elements():
    rows = [
        record(0, {"r": True, "s": True}, {"r": 1.1, "s": 1.0}),
        record(8, {"r": True, "s": False}, {"r": 1.6, "s": 1.0}),
        record(16, {"r": True, "s": False}, {"r": 2.5, "s": 1.0}),
    ]
    truth = lead_time.ground_truth(rows, final=16)
    assert lead_time.lead_times(rows, truth) == ([8], 0, 0)
    # step 0: the verdict flags r (fails) and s (does not); the E rule flags nothing yet
    assert lead_time.precision_recall(rows, truth, 0, "verdict") == (1, 2, 1, 2)
    assert lead_time.precision_recall(rows, truth, 0, "E rule") == (0, 0, 1, 2)


def test_the_section_replaces_itself_and_keeps_the_rest(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Controlled experiment\n\ntable\n")
    start, end = lead_time.SECTION
    lead_time.write_section(results, f"{start}\nfirst\n{end}\n")
    lead_time.write_section(results, f"{start}\nsecond\n{end}\n")
    text = results.read_text()
    assert text.startswith("# Controlled experiment\n\ntable\n")
    assert "second" in text and "first" not in text and text.count(start) == 1


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lead_time")
    cache = tmp_path_factory.mktemp("cache")
    argv = ["--quick", "--variants", "isotropic", "anisotropic", "--out", str(out)]
    payload = lead_time.main([*argv, "--cache-dir", str(cache), "--threads", "1"])
    return payload, out


def test_the_quick_run_measures_from_step_zero_and_writes_its_tables(quick_run):
    payload, out = quick_run
    steps = {(r["variant"], r["metric"]): set() for r in payload["records"]}
    for r in payload["records"]:
        steps[(r["variant"], r["metric"])].add(r["step"])
    assert steps[("anisotropic", "identity")] == {0, 1, 6}
    assert steps[("anisotropic", "adam")] == {1, 6}  # no second moments before the first step
    text = (out / "RESULTS.md").read_text()
    for heading in ("### Precision and recall", "### Lead time", "### False-positive rate"):
        assert heading in text
    assert (out / "figures" / "lead_time_anisotropic.png").stat().st_size > 10_000
    # the x-elongated data break the axis swaps: the verdict names them before the first step
    step0 = next(
        r
        for r in payload["records"]
        if r["variant"] == "anisotropic" and r["step"] == 0 and r["metric"] == "identity"
    )
    flagged = {g for g, e in step0["elements"].items() if e["flag"]}
    assert flagged and flagged <= {"r", "r3", "sr", "sr3"}
    isotropic = [r for r in payload["records"] if r["variant"] == "isotropic"]
    assert not any(e["flag"] for r in isotropic for e in r["elements"].values())  # the null
