"""The replication protocol of experiments/controlled_experiment.py runs end to end at toy size
(``--quick``: 8² grid, one seed, one probe draw, 8 probes, 6 steps, identity and subspace
metrics) and its report has the structure and the known answers of the full run."""

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from symcoherence.testing import TOLERANCES

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "controlled_experiment.py"


def _load():
    spec = importlib.util.spec_from_file_location("controlled_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    experiment = _load()
    out = tmp_path_factory.mktemp("experiment")
    cache = tmp_path_factory.mktemp("cache")
    settings, _ = experiment.parse(["--quick", "--out", str(out)])
    settings = type(settings)(**{**settings.__dict__, "cache_dir": cache})
    return experiment, experiment.run(settings), out


def test_every_variant_metric_and_group_is_measured(quick_run):
    experiment, payload, _ = quick_run
    cells = {(r["variant"], r["group"], r["metric"]) for r in payload["records"]}
    for variant in experiment.VARIANTS:
        for metric in ("identity", "subspace"):
            assert (variant, "D4", metric) in cells
    assert ("kolmogorov", "Kolmogorov", "identity") in cells  # its diagnostic group as well
    assert not payload["skipped"]
    for record in payload["records"]:
        assert record["elements"][record["identity"]]["ratio"] == pytest.approx(1.0)


def test_group_averaged_model_gives_ratio_one_and_error_one(quick_run):
    _, payload, _ = quick_run
    tol = TOLERANCES["fp32"]
    records = [r for r in payload["records"] if r["variant"] == "anisotropic_group_averaged"]
    assert records
    for record in records:
        for element, row in record["elements"].items():
            for name in ("ratio", "equivariance_median", "equivariance_q3"):
                assert math.isclose(row[name], 1.0, rel_tol=tol["rtol"], abs_tol=tol["atol"]), (
                    record["metric"],
                    element,
                    name,
                    row[name],
                )


def test_decision_rules_count_every_null_element(quick_run):
    experiment, payload, _ = quick_run
    rules = payload["rules"]
    assert {(r["statistic"], r["threshold"]) for r in rules} == set(experiment.CANDIDATE_RULES)
    for entry in rules:
        assert entry["null"][1] == 14  # 7 elements g ≠ e × (isotropic + group-averaged)
        assert entry["hit"][1] == 4  # r, r3, sr, sr3 of the anisotropic model
        assert entry["group_averaged"][0] == 0  # an exactly equivariant model is never flagged
        assert 0 <= entry["null"][0] <= entry["null"][1]


def test_kolmogorov_solver_check_and_report(quick_run):
    _, payload, out = quick_run
    defect = payload["kolmogorov"]["defect"]
    assert defect["e"] == 0.0 and defect["sr2"] < TOLERANCES["fp64"]["rtol"]
    assert min(defect[g] for g in ("r", "r2", "r3", "s", "sr", "sr3")) > 0.01
    report = (out / "RESULTS.md").read_text()
    for heading in ("## Decision rules", "## Kolmogorov control", "## Rank correlation"):
        assert heading in report
    assert (out / "figures" / "anisotropic.png").stat().st_size > 0
    assert (out / "results.json").is_file()
    assert "## Headline" in report


def test_training_leaves_no_config_in_the_working_directory(quick_run):
    experiment, payload, _ = quick_run
    cache = Path(payload["settings"]["cache_dir"])
    assert (cache / "experiment_runs" / "isotropic" / "config.yaml").is_file()
    assert not (Path.cwd() / "config.yaml").exists()


def test_report_is_regenerated_from_the_json(quick_run):
    experiment, _, out = quick_run
    before = (out / "RESULTS.md").read_text()
    text = experiment.main(["--quick", "--out", str(out), "--from-json", str(out / "results.json")])
    assert text == before


def test_merging_a_run_that_repeats_measurements_counts_each_once(quick_run, tmp_path):
    experiment, payload, out = quick_run
    source = str(out / "results.json")
    experiment.main(["--quick", "--out", str(tmp_path), "--from-json", source, "--merge", source])
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(records) == len(payload["records"])
    labels = [experiment._label(r) for r in records]
    assert len(set(labels)) == len(labels)


def _agreement_records(reference_rows, approx_rows):
    """Records of one model and probe draw under identity, the cg reference and EK-FAC."""
    base = {"variant": "anisotropic", "group": "D4", "seed": 0, "draw": 0, "identity": "e"}
    return [
        {**base, "metric": "identity", "seconds": 2.0, "elements": reference_rows},
        {**base, "metric": "gn_orbit", "seconds": 100.0, "elements": reference_rows},
        {**base, "metric": "ekfac_orbit", "seconds": 3.0, "elements": approx_rows},
    ]


def _row(transfer, lo, hi):
    from symcoherence.coherence.statistics.summary import ElementSummary

    row = dict.fromkeys((f.name for f in dataclasses.fields(ElementSummary)), 1.0)
    row.pop("element")
    return {**row, "transfer": transfer, "transfer_lo": lo, "transfer_hi": hi}


def test_agreement_scores_an_approximation_against_its_reference():
    """Known answers: H equal to the reference's gives r = 1, error 0; a negated H gives r = −1,
    error 2; verdicts (τ's interval below 0.5) are compared element by element; costs are ratios
    of the identity metric's time on the same probes."""
    import torch

    experiment = _load()
    reference = {"e": _row(1, 1, 1), "r": _row(0.1, 0.0, 0.2), "s": _row(1.0, 0.8, 1.2)}
    approx = {"e": _row(1, 1, 1), "r": _row(0.1, 0.0, 0.2), "s": _row(0.2, 0.1, 0.3)}
    h = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0))
    key = ("anisotropic", "D4", 0, 0)
    for matrix, spearman, error in ((h, 1.0, 0.0), (-h, -1.0, 2.0)):
        records = _agreement_records(reference, approx)
        matrices = {(*key, "gn_orbit"): h, (*key, "ekfac_orbit"): matrix}
        experiment.attach_agreement(records, matrices)
        scored = [r for r in records if "agreement" in r]
        assert [r["metric"] for r in scored] == ["ekfac_orbit"]
        agreement = scored[0]["agreement"]
        assert agreement["spearman"] == pytest.approx(spearman)
        assert agreement["frobenius"] == pytest.approx(error)
        assert agreement["same_verdict"] == [1, 2]  # r flagged by both, s only by EK-FAC
        assert agreement["cost"] == pytest.approx(1.5)
        assert agreement["reference_cost"] == pytest.approx(50.0)
    # no reference on these probes: nothing to score
    records = _agreement_records(reference, approx)[::2]
    experiment.attach_agreement(records, {(*key, "ekfac_orbit"): h})
    assert not any("agreement" in r for r in records)
    text = "\n".join(experiment.agreement_lines(scored))
    assert "| anisotropic | D4 | ekfac_orbit | 1 |" in text and "1/2 = 0.50" in text
