"""configs/sphere_sfno.yaml parses into the intended objects and runs a tiny fast_dev_run."""

from pathlib import Path

import pytest

from symcoherence.cli.lightning import lightning_cli
from symcoherence.coherence import GaussNewton
from symcoherence.data import SphericalShallowWaterSource, TrajectoryDataModule
from symcoherence.models import SFNO

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sphere_sfno.yaml"
# A smaller run of the same config: 16×32 grid, few short trajectories, 4 probes.
TINY = [
    "--data.init_args.source.init_args.nlat=16",
    "--data.init_args.source.init_args.nlon=32",
    "--data.init_args.source.init_args.num_trajectories=16",
    "--data.init_args.source.init_args.num_frames=3",
    "--data.init_args.source.init_args.steps_per_frame=2",
    "--data.init_args.progress=false",
    "--model.backbone.init_args.nlat=16",
    "--model.backbone.init_args.nlon=32",
    "--model.backbone.init_args.embed_dim=4",
    "--model.backbone.init_args.num_layers=2",
    "--model.rollout_horizon=2",
]


def test_config_parses_into_the_sphere_classes(tmp_path):
    cli = lightning_cli(
        ["--config", str(CONFIG), f"--data.init_args.cache_dir={tmp_path}"], run=False
    )
    data, backbone = cli.datamodule, cli.model.backbone
    assert isinstance(data, TrajectoryDataModule)
    assert isinstance(data.source, SphericalShallowWaterSource)
    assert isinstance(backbone, SFNO)
    assert (backbone.nlat, backbone.nlon) == (data.source.nlat, data.source.nlon)
    assert backbone.in_channels == data.in_channels == 3
    assert backbone.positional_embedding == "none"
    assert data.diagnostic_group.name == "ZonalxEquator"
    assert len(data.diagnostic_group) == 16 and len(data.symmetry_group) == 128
    # Every zonal shift of the diagnostic group is exact for this SFNO.
    shifts = [e for e in data.diagnostic_group.elements if e.startswith("z")]
    assert shifts and all(int(e[1:]) % backbone.zonal_stride == 0 for e in shifts)
    monitors = [c for c in cli.trainer.callbacks if type(c).__name__ == "OrbitCoherenceMonitor"]
    assert len(monitors) == 1 and isinstance(monitors[0].spec.metric, GaussNewton)
    assert monitors[0].spec.metric.solver == "subspace"


def test_config_runs_a_tiny_fast_dev_run(tmp_path):
    cli = lightning_cli(
        [
            "fit",
            "--config",
            str(CONFIG),
            f"--data.init_args.cache_dir={tmp_path}",
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
            "--trainer.callbacks.init_args.probe_size=4",
            *TINY,
        ]
    )
    metrics = cli.trainer.callback_metrics
    ratios = {
        k: float(v) for k, v in metrics.items() if k.startswith("coherence/ZonalxEquator/ratio/")
    }
    assert set(ratios) >= {"coherence/ZonalxEquator/ratio/z4", "coherence/ZonalxEquator/ratio/s"}
    for element in ("z4", "z8", "z12"):  # multiples of the SFNO's zonal stride 2: exact
        assert ratios[f"coherence/ZonalxEquator/ratio/{element}"] == pytest.approx(1.0, abs=1e-3)
