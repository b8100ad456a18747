"""The symcoherence command: the quickstart path end to end, analyze against the monitor's own
log of the same checkpoint, generate, and one-line errors for user mistakes."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from symcoherence.cli import main
from symcoherence.cli.analyze import analyze, load_run
from symcoherence.coherence import MeasurementSpec
from symcoherence.testing import TOLERANCES as TOL

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"
D4 = ("e", "r", "r2", "r3", "s", "sr", "sr2", "sr3")
SOURCE = "--data.init_args.source.init_args"


def _tiny_overrides(tmp_path: Path, config: Path = QUICKSTART) -> list[str]:
    """A config shrunk to seconds: 16² grid, few trajectories, a few steps."""
    return [
        "--config",
        str(config),
        f"{SOURCE}.n=16",
        f"{SOURCE}.num_trajectories=64",
        f"{SOURCE}.num_frames=4",
        f"{SOURCE}.burn_in=0.0",
        "--data.init_args.progress=false",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        "--model.backbone.init_args.width=8",
        "--model.rollout_horizon=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """One tiny quickstart run shared by the tests below (16 validation trajectories)."""
    tmp_path = tmp_path_factory.mktemp("quickstart")
    torch.manual_seed(0)
    assert main(["fit", *_tiny_overrides(tmp_path)]) == 0
    return tmp_path, tmp_path / "runs" / "quickstart" / "version_0"


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """A tiny run of the group-averaged U-Net whose monitor uses the Gauss–Newton reference and
    fires once, at the end of the epoch, on the parameters the checkpoint then holds."""
    tmp_path = tmp_path_factory.mktemp("averaged")
    config = yaml.safe_load(QUICKSTART.read_text())
    config["model"]["group_average"] = True
    config["trainer"]["callbacks"] = [
        {
            "class_path": "symcoherence.OrbitCoherenceMonitor",
            "init_args": {
                "metric": "gauss_newton",
                "every_n_epochs": 1,
                "probe_size": 5,
                "log_figures": False,
            },
        }
    ]
    path = tmp_path / "averaged.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    assert main(["fit", *_tiny_overrides(tmp_path, path)]) == 0
    return tmp_path, tmp_path / "runs" / "quickstart" / "version_0"


def _scalars(run_dir: Path) -> EventAccumulator:
    (events,) = run_dir.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def test_quickstart_writes_loss_and_coherence_scalars(quickstart_run):
    _, run_dir = quickstart_run
    accumulator = _scalars(run_dir)
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "val/loss", "coherence/D4/orbit", "basin/D4/compatibility"} <= scalars
    assert {"basin/D4/suppressed", "basin/D4/loss/train_loss", "basin/D4/loss/val_loss"} <= scalars
    assert {f"coherence/D4/{s}/{g}" for s in ("ratio", "coupling") for g in D4} <= scalars
    identity = accumulator.Scalars("coherence/D4/ratio/e")
    assert identity and all(event.value == 1.0 for event in identity)
    assert (run_dir / "config.yaml").is_file()


def test_analyze_reports_what_the_monitor_logged_for_the_same_checkpoint(averaged_run, capsys):
    tmp_path, run_dir = averaged_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    output = tmp_path / "analysis"
    arguments = ["analyze", str(checkpoint), "--metric", "gauss_newton", "--probe-size", "5"]
    assert main([*arguments, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "ratio ρ [interval]" in printed and "verdict:" in printed and "p = " not in printed
    for element in D4:
        assert f"\n{element} " in printed
    assert (output / "analysis.png").stat().st_size > 1000
    report = json.loads((output / "analysis.json").read_text())
    assert report["settings"]["metric"] == "gauss_newton"

    logged = _scalars(run_dir)
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    compared = 0
    for key, value in report["summary"].items():
        if key.startswith("measurement/") or "ratio_baseline" in key:
            continue  # timing differs; the rest must be the monitor's own numbers
        if key not in logged.Tags()["scalars"]:
            continue
        (event,) = [e for e in logged.Scalars(key) if e.step == step]
        assert event.value == pytest.approx(value, rel=TOL["fp32"]["rtol"], abs=1e-6), key
        compared += 1
    assert compared > 5 * len(D4)
    # the known answer: a group-averaged model couples every element like the identity
    for element in D4:
        assert report["summary"][f"coherence/D4/ratio/{element}"] == pytest.approx(1.0, abs=1e-4)


def test_analyze_writes_a_self_contained_report_with_the_verdict_and_the_table(
    quickstart_run, capsys
):
    import re

    tmp_path, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    page = tmp_path / "report.html"
    arguments = ["analyze", str(checkpoint), "--probe-size", "6", "--output", str(tmp_path / "a")]
    assert main([*arguments, "--report", str(page), "--run", str(run_dir)]) == 0
    assert "the report" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # self-contained: no external URL; the figures are embedded
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "http://" not in text and "https://" not in text
    assert text.count('src="data:image/png;base64,') >= 4  # over training + one per statistic
    assert "learning from the probes" in text or "the rule flags no element" in text  # verdict
    assert "basin compatibility" in text and "transfer τ [90 %]" in text
    for element in D4:
        assert f"<td>{element}</td>" in text
    assert f"symcoherence analyze {checkpoint}" in text  # the command that reproduces it

    markdown = tmp_path / "report.md"
    assert main([*arguments, "--report", str(markdown)]) == 0
    lines = markdown.read_text().splitlines()
    assert lines[0].startswith("# D4, identity metric")
    assert sum(line.startswith("| ") for line in lines) == 1 + len(D4)
    as_json = tmp_path / "report.txt"
    assert main([*arguments, "--report", str(as_json), "--format", "json"]) == 0
    content = json.loads(as_json.read_text())
    assert content["compatibility"]["statistic"] == "transfer"
    rows = {row[0]: row for row in content["table"]["rows"]}
    minimum = min(row["transfer"] for row in content["elements"] if row["element"] != "e")
    assert content["compatibility"]["value"] == pytest.approx(minimum)
    assert set(rows) == set(D4) and rows["e"][1] == "identity"
    capsys.readouterr()
    assert main([*arguments, "--format", "json"]) == 2  # --format without --report
    assert "--report" in capsys.readouterr().err


def test_analyze_function_defaults_to_the_diagnostic_group(quickstart_run):
    _, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    model, datamodule, _ = load_run(checkpoint, run_dir / "config.yaml")
    measurement = analyze(model, datamodule, MeasurementSpec(resamples=100), probe_size=3)
    assert measurement.influence.group_name == datamodule.diagnostic_group.name == "D4"
    assert measurement.equivariance.shape == (8, 3)


def test_analyze_without_a_checkpoint_reads_what_the_start_firing_logged(
    quickstart_run, tmp_path, capsys
):
    _, run_dir = quickstart_run
    logged = _scalars(run_dir)
    assert min(e.step for e in logged.Scalars("coherence/D4/orbit")) == 0  # the start firing
    output = tmp_path / "preflight"
    arguments = ["analyze", "--config", str(run_dir / "config.yaml"), "--probe-size", "16"]
    assert main([*arguments, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "initializes (step 0, before training)" in printed
    assert "\nreading: step 0: " in printed
    report = json.loads((output / "analysis.json").read_text())
    assert report["settings"]["checkpoint"] is None and report["reading"].startswith("step 0: ")
    compared = 0
    for key, value in report["summary"].items():
        if key.startswith(("measurement/", "baseline/")) or key not in logged.Tags()["scalars"]:
            continue
        (event,) = [e for e in logged.Scalars(key) if e.step == 0]
        assert event.value == pytest.approx(value, rel=TOL["fp32"]["rtol"], abs=1e-6), key
        compared += 1
    assert compared > 5 * len(D4)


def test_analyze_refuses_a_config_that_is_not_yaml_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    assert main(["analyze", "--config", str(broken)]) == 2
    assert "broken.yaml is not valid YAML (line 2)" in _one_line_error(capsys)
    assert main(["analyze", "--config", str(tmp_path)]) == 2
    assert "is a folder" in _one_line_error(capsys)


def test_generate_builds_the_cache_of_a_config(tmp_path, capsys):
    args = [
        a
        for a in _tiny_overrides(tmp_path)
        if a.startswith(("--config", "--data")) or a == str(QUICKSTART)
    ]
    assert main(["generate", *args]) == 0
    assert "dataset ready" in capsys.readouterr().out
    assert list((tmp_path / "cache").glob("*.h5"))


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "generate", "analyze"):
        assert f"\n  {command} " in text


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train"], "unknown command 'train'"),
        (["--threads", "two", "fit"], "--threads takes a non-negative integer"),
        (["fit", "--trainer.max_epocs=1"], "did you mean --trainer.max_epochs"),
        (["fit", "--trainer.max_epoch=1"], "did you mean --trainer.max_epochs"),  # no prefixes
        (["fit", "--model.learning_rate=0.1"], "learning_rate"),
        (["fit", "--trainer.callbacks.init_args.group=D5"], "unknown group 'D5'"),
        (["fit", "--trainer.accelerator=gpu"], "override: --trainer.accelerator=cpu"),
        (["generate", f"{SOURCE}.nn=16"], "did you mean"),
        (["analyze", "x.ckpt", "--projection-seed", "3"], "give D too"),
        (["analyze", "x.ckpt", "--projection-dim", "0"], "Projection dim must be an integer >= 1"),
        (["analyze", "x.ckpt", "--metric", "gauss_newton", "--projection-dim", "64"], "Gauss"),
        (["analyze"], "or --config CONFIG.yaml without one to measure the model"),
        (["analyze", "--config", "missing.yaml"], "config missing.yaml does not exist"),
        (["analyze", "--config", str(QUICKSTART), "--metric", "adam"], "not have yet"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_the_fix(tmp_path, capsys, arguments, message):
    command, rest = (arguments[0], arguments[1:]) if arguments[0] != "--threads" else (None, None)
    if command in ("fit", "generate"):
        arguments = [command, *_tiny_overrides(tmp_path)[:2], *rest]
    if command == "fit" and "callbacks" in rest[0]:
        arguments = [
            "fit",
            *_tiny_overrides(tmp_path)[:2],
            "--trainer.callbacks=symcoherence.OrbitCoherenceMonitor",
            *rest,
        ]
    assert main(arguments) == 2
    assert message in _one_line_error(capsys)
    assert not list(tmp_path.rglob("*.h5*"))  # refused before any data were generated


def test_group_names_are_case_insensitive(tmp_path, monkeypatch):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["trainer"]["callbacks"][0]["init_args"]["group"] = "d4"
    path = tmp_path / "lower.yaml"
    path.write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    fast = ["--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"]
    assert main(["fit", *_tiny_overrides(tmp_path, path), *fast]) == 0
    assert list(elsewhere.iterdir()) == []  # fast_dev_run saves its config in the root dir


def test_ctrl_c_during_generate_is_one_line_and_the_data_resume(tmp_path, capsys, monkeypatch):
    from symcoherence.data import NavierStokesSource

    original = NavierStokesSource.generate

    def interrupted(self, start=0, count=None, **kwargs):
        if start > 0:
            raise KeyboardInterrupt
        return original(self, start, count, **kwargs)

    monkeypatch.setattr(NavierStokesSource, "generate", interrupted)
    args = [*_tiny_overrides(tmp_path)[:2], *(a for a in _tiny_overrides(tmp_path) if SOURCE in a)]
    args += [f"--data.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.progress=false"]
    assert main(["generate", *args]) == 130
    assert "interrupted" in _one_line_error(capsys)
    (partial,) = (tmp_path / "cache").glob("*.h5.tmp")
    monkeypatch.setattr(NavierStokesSource, "generate", original)
    assert main(["generate", *args]) == 0
    assert not partial.exists() and list((tmp_path / "cache").glob("*.h5"))


def test_missing_checkpoint_fails(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt does not exist" in _one_line_error(capsys)


def test_incompatible_group_fails(quickstart_run, capsys):
    _, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    wrong_period = json.dumps({"type": "Shifts", "arguments": {"shifts": [[1, 0]], "period": 64}})
    assert main(["analyze", str(checkpoint), "--probe-size", "3", "--group", wrong_period]) == 2
    assert "period of 64 cells but the grid is 16×16" in _one_line_error(capsys)


def test_checkpoint_without_config_asks_for_one(tmp_path, capsys):
    checkpoint = tmp_path / "orphan.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    assert main(["analyze", str(checkpoint)]) == 2
    assert "--config" in _one_line_error(capsys)


def test_a_monitor_that_does_not_fit_the_run_is_a_one_line_error(tmp_path, capsys):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["trainer"]["callbacks"][0]["init_args"]["probe_size"] = 40
    path = tmp_path / "many_probes.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", *_tiny_overrides(tmp_path, path)]) == 2
    assert "needs 40 distinct trajectories" in _one_line_error(capsys)


def test_a_projection_set_in_yaml_reaches_the_monitor_and_analyze_reproduces_it(tmp_path, capsys):
    config = yaml.safe_load(QUICKSTART.read_text())
    monitor = config["trainer"]["callbacks"][0]["init_args"]
    monitor.update(every_n_train_steps=None, every_n_epochs=1, probe_size=5, log_figures=False)
    monitor["projection"] = {"dim": 2048, "seed": 1}
    path = tmp_path / "projected.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    assert main(["fit", *_tiny_overrides(tmp_path, path)]) == 0
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    logged = _scalars(run_dir)

    def ratios(*extra):
        output = tmp_path / f"analysis{len(extra)}"
        arguments = ["analyze", str(checkpoint), "--probe-size", "5", "--output", str(output)]
        assert main([*arguments, *extra]) == 0
        summary = json.loads((output / "analysis.json").read_text())["summary"]
        return {g: summary[f"coherence/D4/ratio/{g}"] for g in D4}

    monitored = {
        g: next(e.value for e in logged.Scalars(f"coherence/D4/ratio/{g}") if e.step == step)
        for g in D4
    }
    projected = ratios("--projection-dim", "2048", "--projection-seed", "1")
    assert projected == pytest.approx(monitored, rel=TOL["fp32"]["rtol"], abs=1e-6)
    exact = ratios()
    assert max(abs(exact[g] - monitored[g]) for g in D4) > 1e-4  # the monitor did project
    capsys.readouterr()
