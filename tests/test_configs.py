"""Every YAML in configs/ parses and instantiates (no data generated, no training)."""

from pathlib import Path

import pytest
import torch

from symcoherence.callbacks import OrbitCoherenceMonitor
from symcoherence.cli.lightning import lightning_cli
from symcoherence.data import TrajectoryDataModule
from symcoherence.models import EmulatorModule

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
VARIANTS = sorted(p for p in (CONFIGS / "experiment").glob("*.yaml") if p.name != "base.yaml")
# configs that read a data file the user has (The Well, PDEGym): tests/test_file_configs.py builds
# them on small synthetic files
NEEDS_A_FILE = {"the_well.yaml", "pdegym_ns.yaml"}
STANDALONE = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in NEEDS_A_FILE)


def _instantiate(*configs: Path):
    args = [arg for path in configs for arg in ("--config", str(path))]
    return lightning_cli([*args, "--trainer.logger=false"], run=False)


@pytest.mark.parametrize("config", STANDALONE + VARIANTS, ids=lambda p: p.stem)
def test_config_instantiates(config):
    files = (CONFIGS / "experiment" / "base.yaml", config) if config in VARIANTS else (config,)
    cli = _instantiate(*files)
    assert isinstance(cli.model, EmulatorModule)
    assert isinstance(cli.datamodule, TrajectoryDataModule)
    monitors = [c for c in cli.trainer.callbacks if isinstance(c, OrbitCoherenceMonitor)]
    assert monitors, "every shipped config runs the orbit-coherence monitor"
    # channel counts were linked from the data into the backbone
    backbone = getattr(cli.model.backbone, "backbone", cli.model.backbone)
    assert backbone.in_channels == cli.datamodule.in_channels
    assert backbone.out_channels == cli.datamodule.out_channels
    assert cli.model.field_type == cli.datamodule.field_type
    # the model's group (used only by group_average) is the data's small diagnostic group
    assert cli.model.diagnostic_group.spec() == cli.datamodule.diagnostic_group.spec()
    assert set(cli.datamodule.diagnostic_group.elements) <= set(cli.datamodule.symmetry_group)


def test_group_averaged_variant_is_exactly_equivariant(tol):
    cli = _instantiate(
        CONFIGS / "experiment" / "base.yaml",
        CONFIGS / "experiment" / "anisotropic_group_averaged.yaml",
    )
    group, field_type = cli.datamodule.diagnostic_group, cli.datamodule.field_type
    assert group.name == "D4"
    grid = cli.datamodule.source.n
    x = torch.randn(2, field_type.num_channels, grid, grid)
    with torch.no_grad():
        for element in group.elements:
            torch.testing.assert_close(
                cli.model(group.act(element, x, field_type)),
                group.act(element, cli.model(x), field_type),
                **tol["fp32"],
            )
