"""``symcoherence fit|validate|test``: LightningCLI runs of an emulator on a trajectory datamodule.

Channel counts are linked from the datamodule into the backbone
(``data.in_channels -> model.backbone.init_args.in_channels``, same for ``out_channels``), and the
field types and the diagnostic group into the model; TensorBoard is the default logger.

User errors become one line (:class:`UsageError`): an unknown key names the closest known ones
(``--trainer.max_epocs`` → "did you mean --trainer.max_epochs?"), abbreviated options are refused
rather than guessed, a configuration that cannot be built says why, and a config that asks for a
GPU on a machine without one says so before any data are generated, with the override to use.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TRAINER_COMMANDS = ("fit", "validate", "test")
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "runs", "name": "symcoherence", "default_hp_metric": False},
}


class UsageError(Exception):
    """A configuration or command-line mistake, reported as one line without a traceback."""


def option_names(parser: Any) -> Iterator[str]:
    """Every option string of a (jsonargparse) parser and of its subcommand parsers."""
    for action in parser._actions:
        yield from (option for option in action.option_strings if option.startswith("--"))
        for subparser in (getattr(action, "_name_parser_map", None) or {}).values():
            yield from option_names(subparser)


_BOILERPLATE = (
    "Parser key",
    "Does not validate",
    "Subtypes:",
    "Errors:",
    "Problem with given class_path",
    "Expected a",
    "Given value",
    "Not a valid subclass",
    "Subclass types expect",
    "a class path",
    "a dict",
)


def _parameters(class_path: str) -> list[str]:
    """The constructor parameters of ``class_path`` (empty when it cannot be imported)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def explain(message: str, parser: Any) -> str:
    """One line out of a (nested, multi-line) parser error, with "did you mean" suggestions.

    The line is the innermost real cause (jsonargparse wraps it in union and class-path
    boilerplate), prefixed with the config keys leading to it. Unknown options are matched
    against the parser's options; an unknown ``init_args`` key against the constructor of the
    class it was given to.
    """
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines() if line.strip()]
    cause = next(
        (line for line in lines if not line.startswith(_BOILERPLATE)),
        lines[0] if lines else message,
    )
    where = ".".join(re.findall(r'Parser key "([\w.]+)"', message))
    hints = []
    known = sorted(set(option_names(parser)))
    for option in dict.fromkeys(re.findall(r"--[\w.\-]+", cause)):
        close = difflib.get_close_matches(option, known, n=2, cutoff=0.75)
        if close and option not in known:
            hints.append(f"did you mean {' or '.join(close)}?")
    rejected = re.search(r"Option '([\w\-]+)' is not accepted", cause)
    if rejected:
        head = message[: message.find(cause)]
        owners = re.findall(r"class_path '([\w.]+)'", head)
        close = difflib.get_close_matches(
            rejected.group(1), _parameters(owners[-1]) if owners else [], n=2, cutoff=0.6
        )
        if close:
            hints.append(f"did you mean {' or '.join(repr(c) for c in close)}?")
    return (f"{where}: " if where else "") + cause + ("; " + "; ".join(hints) if hints else "")


def _cuda_wanted(config: Any) -> list[str]:
    """The settings of a parsed run config that need a CUDA device."""
    wanted = []
    accelerator = str(config.get("trainer.accelerator", "auto") or "auto")
    if accelerator in ("gpu", "cuda"):
        wanted.append(f"trainer.accelerator={accelerator} (override: --trainer.accelerator=cpu)")
    device = str(config.get("data.init_args.generation_device", "cpu") or "cpu")
    if device.startswith("cuda"):
        wanted.append(
            f"data.init_args.generation_device={device} "
            "(override: --data.init_args.generation_device=cpu)"
        )
    return wanted


def lightning_cli(args: Sequence[str] | dict[str, Any] | None, run: bool = True) -> Any:
    """Build the LightningCLI of symcoherence (``run=False`` only instantiates the classes).

    Args:
        args: command-line arguments (or a config dict); ``None`` reads ``sys.argv``.
        run: run the subcommand (``args`` then starts with ``fit``, ``validate`` or ``test``).

    Raises:
        UsageError: for a configuration or command-line mistake (see the module docstring).
    """
    import torch
    from jsonargparse import ArgumentError
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

        def parse_arguments(self, parser: Any, args: Any) -> None:
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as error:
                raise UsageError(explain(str(error), parser)) from None

        def before_instantiate_classes(self) -> None:
            if not run:  # building the classes (tests, analyze) needs no device
                return
            config = self.config[self.subcommand] if self.subcommand else self.config
            wanted = _cuda_wanted(config)
            if wanted and not torch.cuda.is_available():
                raise UsageError(
                    "the config asks for a CUDA device, but this machine has none: "
                    + "; ".join(wanted)
                )

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, TypeError) as error:
                raise UsageError(explain(str(error), self.parser)) from None

        def after_fit(self) -> None:
            _print_log_location(self.trainer)

    no_abbreviations = {"allow_abbrev": False, "exit_on_error": False}
    parser_kwargs: dict[str, Any] = dict(no_abbreviations)
    if run:
        for command in TRAINER_COMMANDS:
            parser_kwargs[command] = {
                "description": f"symcoherence {command}: a LightningCLI {command} run.",
                **no_abbreviations,
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
            parser_kwargs=parser_kwargs,
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
