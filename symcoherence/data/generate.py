"""Generate a Navier–Stokes dataset into the trajectory cache from a config, with a progress bar.

The config holds :class:`~symcoherence.data.NavierStokesDataModule` arguments, either at the top
level or in LightningCLI layout (``data: {class_path: ..., init_args: {...}}``); a YAML or JSON file
works as well as a dict. From a shell, ``symcoherence generate --config C`` generates (or finds)
the dataset of a run config.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     path = generate({"n": 16, "num_trajectories": 2, "num_frames": 3, "burn_in": 0.0,
    ...                      "cache_dir": root}, progress=False)
    ...     path.name.startswith("navier_stokes-")
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from symcoherence.data.navier_stokes_datamodule import NavierStokesDataModule


def read_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Datamodule arguments from a dict or a YAML/JSON file (LightningCLI ``data:`` layout accepted)."""
    if not isinstance(config, Mapping):
        with open(config) as stream:
            config = yaml.safe_load(stream) or {}
    if not isinstance(config, Mapping):
        raise ValueError(f"a dataset config must be a mapping of arguments, got {config!r}")
    if "data" in config:
        data = config["data"]
        config = data.get("init_args", data) if isinstance(data, Mapping) else data
    return {key: value for key, value in dict(config).items() if key != "class_path"}


def generate(
    config: Mapping[str, Any] | str | os.PathLike, progress: bool = True, **overrides: Any
) -> Path:
    """Generate (or find) the cached dataset of ``config`` and return its HDF5 path.

    Args:
        config: :class:`NavierStokesDataModule` arguments, or a YAML/JSON file holding them.
        progress: show a progress bar.
        **overrides: arguments that replace entries of ``config``.

    Raises:
        TypeError: for an argument the datamodule does not take.
        ValueError: for an invalid configuration (before anything is simulated).
    """
    arguments = {**read_config(config), **overrides, "progress": progress}
    datamodule = NavierStokesDataModule(**arguments)
    datamodule.prepare_data()
    return datamodule.path
