"""The configs that read a user's file (The Well, PDEGym): a missing file is a one-line error,
they build and print on a synthetic file, and one epoch on a tiny file logs coherence scalars."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.file_formats import divergence_free_velocity, write_pdegym, write_the_well
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from symcoherence.callbacks import OrbitCoherenceMonitor
from symcoherence.cli import main
from symcoherence.cli.lightning import lightning_cli
from symcoherence.data import PDEGymSource, TheWellSource

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PATH = "--data.init_args.source.init_args.path"
GRID, TRAJECTORIES, STEPS = 16, 32, 4


def _the_well_file(root: Path) -> Path:
    rng = np.random.default_rng(0)
    shape = (TRAJECTORIES, STEPS, GRID, GRID)
    return write_the_well(
        root / "active.hdf5",
        {
            "concentration": {"order": 0, "data": rng.normal(size=shape)},
            "velocity": {"order": 1, "data": rng.normal(size=(*shape, 2))},
            "E": {"order": 2, "data": rng.normal(size=(*shape, 2, 2))},
        },
        nx=GRID,
        ny=GRID,
        steps=STEPS,
        trajectories=TRAJECTORIES,
    )


def _pdegym_file(root: Path) -> Path:
    velocity = divergence_free_velocity(TRAJECTORIES, STEPS, GRID)
    return write_pdegym(root / "NS-Gauss.nc", "velocity", velocity)


FILES = {
    "the_well": (_the_well_file, TheWellSource, 7),
    "pdegym_ns": (_pdegym_file, PDEGymSource, 2),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_missing_file_is_a_one_line_error(name, tmp_path, capsys):
    config = CONFIGS / f"{name}.yaml"
    assert main(["fit", "--config", str(config), f"{PATH}={tmp_path / 'absent'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "absent" in error and "path" in error


@pytest.mark.parametrize("name", sorted(FILES))
def test_config_builds_and_prints_on_a_synthetic_file(name, tmp_path, capsys):
    make, source_class, channels = FILES[name]
    path = make(tmp_path)
    config = CONFIGS / f"{name}.yaml"
    cli = lightning_cli(
        ["--config", str(config), f"{PATH}={path}", "--trainer.logger=false"], run=False
    )
    assert isinstance(cli.datamodule.source, source_class)
    assert cli.datamodule.in_channels == channels
    assert cli.model.backbone.in_channels == channels
    assert cli.datamodule.diagnostic_group.name == "D4"
    assert any(isinstance(c, OrbitCoherenceMonitor) for c in cli.trainer.callbacks)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), f"{PATH}={path}", "--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["source"]["init_args"]["path"] == str(path)


def _tiny(config: Path, root: Path) -> Path:
    """The config shrunk to seconds: CPU, a small U-Net, a 4-probe identity-metric monitor."""
    settings = yaml.safe_load(config.read_text())
    settings["trainer"].update(
        accelerator="cpu",
        precision="32-true",
        max_epochs=1,
        limit_train_batches=3,
        log_every_n_steps=1,
        enable_progress_bar=False,
    )
    settings["trainer"]["logger"]["init_args"]["save_dir"] = str(root / "runs")
    for callback in settings["trainer"]["callbacks"]:
        arguments = callback["init_args"]
        arguments.update(metric="identity", probe_size=4, log_figures=False)
        arguments.pop("every_n_epochs", None)
        arguments["every_n_train_steps"] = 2
        group = arguments.get("group")
        if isinstance(group, dict):
            group["init_args"].update(shifts=[[1, 0], [0, 1]], period=GRID)
    settings["model"]["backbone"]["init_args"].update(preset="small", width=8)
    settings["model"]["rollout_horizon"] = 2
    settings["data"]["init_args"].update(
        batch_size=4, progress=False, cache_dir=str(root / "cache"), val_fraction=0.25
    )
    path = root / config.name
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("name", sorted(FILES))
def test_one_epoch_on_a_tiny_file_logs_coherence_scalars(name, tmp_path):
    make, _, _ = FILES[name]
    data = make(tmp_path)
    config = _tiny(CONFIGS / f"{name}.yaml", tmp_path)
    torch.manual_seed(0)
    assert main(["fit", "--config", str(config), f"{PATH}={data}"]) == 0
    (events,) = (tmp_path / "runs").glob(f"{name}/version_0/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert any(tag.startswith("coherence/D4/ratio/") for tag in tags), tags
    values = [
        e.value
        for tag in tags
        if tag.startswith("coherence/D4/ratio/")
        for e in accumulator.Scalars(tag)
    ]
    assert values and all(np.isfinite(values))
