"""``symcoherence generate --config C``: the one generator entry point, on the source config shape."""

from symcoherence.cli import main
from symcoherence.data import NavierStokesSource

CONFIG = """\
trainer:
  max_epochs: 3
data:
  class_path: symcoherence.data.TrajectoryDataModule
  init_args:
    source:
      class_path: symcoherence.data.NavierStokesSource
      init_args: {n: 16, num_trajectories: 4, num_frames: 3, burn_in: 0.0}
    val_fraction: 0.25
    progress: false
"""


def test_generate_writes_the_cache_file_of_the_configured_source(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    cache = f"--data.init_args.cache_dir={tmp_path / 'cache'}"
    assert main(["generate", "--config", str(config), cache]) == 0
    source = NavierStokesSource(n=16, num_trajectories=4, num_frames=3, burn_in=0.0)
    path = source.cache_path(tmp_path / "cache")
    assert path.exists() and str(path) in capsys.readouterr().out
    # a changed physical parameter is another data set, in another file
    changed = "--data.init_args.source.init_args.viscosity=0.002"
    assert main(["generate", "--config", str(config), cache, changed]) == 0
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 2


def test_generate_rejects_an_unknown_source_option(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    argv = ["generate", "--config", str(config), "--data.init_args.source.init_args.viscosty=1"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "viscosty" in error and "did you mean 'viscosity'?" in error
    assert len(error.splitlines()) == 1
