"""The ``symcoherence`` command: configured runs, dataset generation and checkpoint analysis.

Subcommands:

* ``fit``, ``validate``, ``test`` — LightningCLI runs of :class:`~symcoherence.models.EmulatorModule`
  on a :class:`~symcoherence.data.TrajectoryDataModule`, configured by YAML files in ``configs/``
  (:mod:`symcoherence.cli.lightning`);
* ``generate`` — generate (or find) the cached dataset of a config, with a progress bar
  (:mod:`symcoherence.cli.generate`);
* ``analyze`` — the monitor's measurement of a checkpoint, or of the model a config initializes
  (the preflight check; :mod:`symcoherence.cli.analyze`).

Mistakes in the command line or the config are reported in one line, with the fix; Ctrl-C stops
with a one-line note (a dataset being generated resumes from its last chunk next time).

Threads: on a CPU, torch's default of one intra-op thread per core thrashes as soon as another
process shares the cores (a training step measured 4–10× slower), so the command uses **one**
thread unless told otherwise: ``--threads N`` (before or after the subcommand) or the environment
variable ``SYMCOHERENCE_THREADS``; ``--threads 0`` keeps torch's default.

Example:
    >>> from symcoherence.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    symcoherence ...
    0
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

USAGE = """\
usage: symcoherence [--threads N] {fit,validate,test,generate,analyze} [options]

Orbit influence: is training a neural PDE emulator learning the symmetries of the physics?

commands:
  fit        train an emulator with a YAML config:  symcoherence fit --config configs/quickstart.yaml
  validate   validate a model:                      symcoherence validate --config C --ckpt_path P
  test       test a model:                          symcoherence test --config C --ckpt_path P
  generate   generate the dataset of a config:      symcoherence generate --config C
  analyze    orbit influence of a checkpoint:       symcoherence analyze CHECKPOINT [--config C]
             ... or of the initialized model:      symcoherence analyze --config C

options:
  --threads N  torch intra-op threads (default 1, or $SYMCOHERENCE_THREADS; 0 = torch's default)

'symcoherence COMMAND --help' lists a command's options.
"""


class _NoTips(logging.Filter):
    """Drop Lightning's advertising tips from the command's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _take_threads(argv: list[str]) -> tuple[list[str], int]:
    """Remove ``--threads N`` / ``--threads=N`` from ``argv``; return it and the thread count."""
    threads = os.environ.get("SYMCOHERENCE_THREADS", "1")
    rest = []
    index = 0
    while index < len(argv):
        item = argv[index]
        if item == "--threads" and index + 1 < len(argv):
            threads, index = argv[index + 1], index + 2
            continue
        if item.startswith("--threads="):
            threads = item.split("=", 1)[1]
        else:
            rest.append(item)
        index += 1
    if not threads.isdigit():
        raise ValueError(f"--threads takes a non-negative integer, got {threads!r}")
    return rest, int(threads)


def _run(command: str, rest: list[str], from_shell: bool) -> int:
    if command in ("fit", "validate", "test"):
        from symcoherence.cli.lightning import lightning_cli

        lightning_cli(None if from_shell else [command, *rest])  # None: LightningCLI reads argv
        return 0
    if command == "generate":
        from symcoherence.cli.generate import generate_main

        return generate_main(rest)
    from symcoherence.cli.analyze import analyze_main

    print(analyze_main(rest))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``symcoherence`` console script; returns the exit status."""
    from_shell = argv is None
    try:
        argv, threads = _take_threads(list(sys.argv[1:] if from_shell else argv))
    except ValueError as error:
        print(f"symcoherence: error: {error}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        from symcoherence import __version__

        print(f"symcoherence {__version__}")
        return 0
    if command not in ("fit", "validate", "test", "generate", "analyze"):
        print(
            f"symcoherence: error: unknown command {command!r}; the commands are fit, validate, "
            "test, generate and analyze (symcoherence --help)",
            file=sys.stderr,
        )
        return 2
    import torch

    from symcoherence.callbacks import ConfigurationError
    from symcoherence.cli.lightning import UsageError

    if threads:
        torch.set_num_threads(threads)
    if from_shell:
        sys.argv = [sys.argv[0], command, *rest]  # LightningCLI reads the cleaned argv
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
    try:
        return _run(command, rest, from_shell)
    except (UsageError, ConfigurationError) as error:
        print(f"symcoherence {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsymcoherence {command}: interrupted", file=sys.stderr)
        return 130
