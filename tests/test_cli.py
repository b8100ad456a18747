"""The symcoherence command: the quickstart path end to end, analyze, generate and error paths."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from symcoherence.cli import main
from symcoherence.cli.analyze import analyze, load_run
from symcoherence.coherence import equivariance_error, orbit_influence
from symcoherence.testing import TOLERANCES as TOL

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def _tiny_overrides(tmp_path: Path) -> list[str]:
    """The quickstart config shrunk to seconds: 16² grid, few trajectories, a few steps."""
    return [
        "--config",
        str(QUICKSTART),
        "--data.init_args.n=16",
        "--data.init_args.num_trajectories=64",
        "--data.init_args.num_frames=4",
        "--data.init_args.burn_in=0.0",
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
    status = main(["fit", *_tiny_overrides(tmp_path)])
    assert status == 0
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    return tmp_path, run_dir


def test_quickstart_writes_loss_and_coherence_scalars(quickstart_run):
    _, run_dir = quickstart_run
    (events,) = run_dir.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "val/loss", "coherence/D4/orbit", "basin/D4/compatibility"} <= scalars
    assert {f"coherence/D4/ratio/{g}" for g in ("r", "s", "sr3")} <= scalars
    identity = accumulator.Scalars("coherence/D4/ratio/e")
    assert identity and all(event.value == 1.0 for event in identity)
    assert (run_dir / "config.yaml").is_file()


def test_analyze_prints_the_table_and_matches_orbit_influence(quickstart_run, capsys):
    tmp_path, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    output = tmp_path / "analysis"
    status = main(
        ["analyze", str(checkpoint), "--probe-size", "4", "--output", str(output), "--group", "D4"]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "influence median [q1, q3]" in printed and "basin compatibility" in printed
    for element in ("e", "r", "r2", "r3", "s", "sr", "sr2", "sr3"):
        assert f"\n{element} " in printed
    assert (output / "analysis.png").stat().st_size > 1000
    report = json.loads((output / "analysis.json").read_text())

    # the same numbers, computed directly with the engine on the same probe set
    model, datamodule, _ = load_run(checkpoint, run_dir / "config.yaml")
    datamodule.prepare_data()
    inputs, targets = datamodule.probe_batch(4, split="val", seed=0)
    group = datamodule.symmetry_group
    types = {"field_type": datamodule.field_type, "target_field_type": datamodule.target_field_type}
    result = orbit_influence(model.backbone.eval(), model.loss_fn, inputs, targets, group, **types)
    with torch.no_grad():
        errors = equivariance_error(model.backbone, model.loss_fn, inputs, targets, group, **types)
    expected = result.summary(equivariance=errors)
    assert report["summary"].keys() == expected.keys()
    for key, value in expected.items():
        assert report["summary"][key] == pytest.approx(value, rel=TOL["fp32"]["rtol"], abs=1e-6)
    torch.testing.assert_close(
        torch.tensor(report["per_sample"]["influence"], dtype=result.influence.dtype),
        result.influence,
        **TOL["fp32"],
    )


def test_analyze_function_defaults_to_the_declared_group(quickstart_run):
    _, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    model, datamodule, _ = load_run(checkpoint, run_dir / "config.yaml")
    analysis = analyze(model, datamodule, probe_size=3)
    assert analysis.result.group_name == datamodule.symmetry_group.name
    assert analysis.equivariance.shape == (len(datamodule.symmetry_group), 3)


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


def test_unknown_command_fails(capsys):
    assert main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_unknown_config_key_fails_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_tiny_overrides(tmp_path), "--model.learning_rate=0.1"])
    assert exit_info.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


def test_missing_checkpoint_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(tmp_path / "missing.ckpt")])
    assert exit_info.value.code == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err


def test_incompatible_group_fails(quickstart_run, capsys):
    _, run_dir = quickstart_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    wrong_period = json.dumps(
        {
            "type": "LatticeGroup",
            "name": "Shifts",
            "period": 64,
            "subpixel": False,
            "table": {
                "e": {"matrix": [[1, 0], [0, 1]], "shift": [0, 0]},
                "x1y0": {"matrix": [[1, 0], [0, 1]], "shift": [1, 0]},
            },
        }
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(checkpoint), "--probe-size", "2", "--group", wrong_period])
    assert exit_info.value.code == 2
    assert "period of 64 cells but the grid is 16×16" in capsys.readouterr().err


def test_checkpoint_without_config_asks_for_one(tmp_path, capsys):
    checkpoint = tmp_path / "orphan.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    with pytest.raises(SystemExit):
        main(["analyze", str(checkpoint)])
    assert "--config" in capsys.readouterr().err
