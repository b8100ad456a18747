"""``symcoherence generate``: generate (or find in the cache) the dataset of a run config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from symcoherence.cli.lightning import UsageError, explain


def generate_main(argv: Sequence[str]) -> int:
    """``symcoherence generate --config C [--data.init_args.source.init_args.KEY VALUE ...]``.

    Reads the ``data`` section of a run config (other sections are ignored), instantiates the
    datamodule and its source and runs its ``prepare_data`` (generation with a progress bar, or a
    cache hit); the cache file's path is printed. Pipeline options such as
    ``--data.init_args.cache_dir`` or ``--data.init_args.generation_device`` apply too.

    Raises:
        UsageError: for an unknown option (with the closest known ones), a datamodule that cannot
            be built, or a CUDA generation device on a machine without one.
    """
    import torch
    from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

    from symcoherence.data import TrajectoryDataModule

    parser = ArgumentParser(
        prog="symcoherence generate",
        description="Generate (or find in the cache) the dataset of a run config.",
        env_prefix="SYMCOHERENCE",
        allow_abbrev=False,
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a run config (YAML)")
    parser.add_subclass_arguments(TrajectoryDataModule, "data", required=True)
    for section in (
        "model",
        "trainer",
        "seed_everything",
        "ckpt_path",
        "optimizer",
        "lr_scheduler",
    ):
        parser.add_argument(f"--{section}", type=Any, default=None, help="(ignored by generate)")
    try:
        config = parser.parse_args(list(argv))
    except ArgumentError as error:
        raise UsageError(explain(str(error), parser)) from None
    device = str(config.get("data.init_args.generation_device", "cpu") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"the config generates data on {device!r}, but this machine has no CUDA device; "
            "override with --data.init_args.generation_device=cpu"
        )
    try:
        datamodule = parser.instantiate_classes(config).data
    except (ValueError, TypeError) as error:
        raise UsageError(explain(str(error), parser)) from None
    datamodule.prepare_data()
    location = getattr(datamodule, "path", None)
    print(f"dataset ready{'' if location is None else f': {location}'}")
    return 0
