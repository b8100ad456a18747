"""The ``symcoherence`` command: configured runs, dataset generation and checkpoint analysis.

Subcommands:

* ``fit``, ``validate``, ``test`` — LightningCLI runs of :class:`~symcoherence.models.EmulatorModule`
  on any :class:`~symcoherence.data.TrajectoryDataModule`, configured by YAML files in
  ``configs/``. Channel counts are linked from the datamodule into the backbone
  (``data.in_channels -> model.backbone.init_args.in_channels``, same for ``out_channels``), and
  field types and the declared group into the model; TensorBoard is the default logger.
* ``generate`` — generate (or find) the cached dataset of a config, with a progress bar.
* ``analyze`` — orbit influence and forward equivariance error of a checkpoint
  (:mod:`symcoherence.analysis`).

Example:
    >>> from symcoherence.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    symcoherence ...
    0
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRAINER_COMMANDS = ("fit", "validate", "test")
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "symcoherence"},
}

USAGE = """\
usage: symcoherence {fit,validate,test,generate,analyze} [options]

Orbit influence: is training a neural PDE emulator learning the symmetries of the physics?

commands:
  fit        train an emulator with a YAML config:  symcoherence fit --config configs/quickstart.yaml
  validate   validate a model:                      symcoherence validate --config C --ckpt_path P
  test       test a model:                          symcoherence test --config C --ckpt_path P
  generate   generate the dataset of a config:      symcoherence generate --config C
  analyze    orbit influence of a checkpoint:       symcoherence analyze CHECKPOINT [--config C]

'symcoherence COMMAND --help' lists a command's options.
"""


def lightning_cli(args: Sequence[str] | dict[str, Any] | None, run: bool = True) -> Any:
    """Build the LightningCLI of symcoherence (``run=False`` only instantiates the classes).

    Args:
        args: command-line arguments (or a config dict); ``None`` reads ``sys.argv``.
        run: run the subcommand (``args`` then starts with ``fit``, ``validate`` or ``test``).
    """
    from lightning.pytorch.cli import LightningCLI

    from symcoherence.data import TrajectoryDataModule
    from symcoherence.models import EmulatorModule

    class SymcoherenceCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            for name in ("in_channels", "out_channels"):
                parser.link_arguments(
                    f"data.{name}", f"model.backbone.init_args.{name}", apply_on="instantiate"
                )
            for name in ("field_type", "target_field_type", "diagnostic_group"):
                parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

        def after_fit(self) -> None:
            _print_log_location(self.trainer)

    descriptions = {
        command: {"description": f"symcoherence {command}: a LightningCLI {command} run."}
        for command in TRAINER_COMMANDS
    }
    # With explicit ``args`` the process's own argv (pytest's, a script's) is unrelated to the run:
    # hide it, or LightningCLI warns about a mixed invocation.
    saved_argv = sys.argv
    if args is not None:
        sys.argv = sys.argv[:1]
    try:
        return SymcoherenceCLI(
            EmulatorModule,
            TrajectoryDataModule,
            subclass_mode_data=True,
            trainer_defaults={"logger": DEFAULT_LOGGER},
            save_config_kwargs={"overwrite": True},
            parser_kwargs=descriptions if run else {},
            args=args,
            run=run,
        )
    finally:
        sys.argv = saved_argv


def _print_log_location(trainer: Any) -> None:
    if not trainer.is_global_zero or getattr(trainer.logger, "save_dir", None) is None:
        return  # no logger, or the stand-in logger of fast_dev_run
    log_dir = trainer.logger.log_dir
    root = Path(trainer.logger.save_dir)
    print(f"\nTensorBoard logs: {log_dir}")
    print(f"Open them with:   tensorboard --logdir {root}")


def generate_main(argv: Sequence[str]) -> int:
    """``symcoherence generate --config C [--data.init_args.source.init_args.KEY VALUE ...]``.

    Reads the ``data`` section of a run config (other sections are ignored), instantiates the
    datamodule and its source and runs its ``prepare_data`` (generation with a progress bar, or a
    cache hit); the cache file's path is printed. Pipeline options such as
    ``--data.init_args.cache_dir`` or ``--data.init_args.generation_device`` apply too.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from symcoherence.data import TrajectoryDataModule

    parser = ArgumentParser(
        prog="symcoherence generate",
        description="Generate (or find in the cache) the dataset of a run config.",
        env_prefix="SYMCOHERENCE",
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
    config = parser.parse_args(list(argv))
    datamodule = parser.instantiate_classes(config).data
    datamodule.prepare_data()
    location = getattr(datamodule, "path", None)
    print(f"dataset ready{'' if location is None else f': {location}'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``symcoherence`` console script; returns the exit status."""
    from_shell = argv is None
    argv = list(sys.argv[1:] if from_shell else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        from symcoherence import __version__

        print(f"symcoherence {__version__}")
        return 0
    if command in TRAINER_COMMANDS:
        lightning_cli(None if from_shell else [command, *rest])  # None: LightningCLI reads argv
        return 0
    if command == "generate":
        return generate_main(rest)
    if command == "analyze":
        from symcoherence.cli.analyze import analyze_main

        print(analyze_main(rest))
        return 0
    print(USAGE, file=sys.stderr)
    print(f"symcoherence: error: unknown command {command!r}", file=sys.stderr)
    return 2
