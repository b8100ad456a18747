r"""``symcoherence analyze``: the monitor's measurement of a checkpoint, or of an initialized model.

Rebuilds the run's model and datamodule from its config (the ``config.yaml`` that
``symcoherence fit`` saves beside the logs, or ``--config``), loads the checkpoint's weights, draws
the probe set the monitor would draw (``probe_batch(n, split, seed)``: distinct trajectories;
``--probe-split train`` goes through the datamodule's augmentation, as the monitor's does) and
measures with :func:`symcoherence.coherence.measure` — the function, model and loss discovery and
isolation the callback uses, so the same settings give the same numbers as the training log.

Without a checkpoint (``symcoherence analyze --config CONFIG.yaml``) it measures the model the
config initializes (seeded with its ``seed_everything``): what the monitor's start firing reads
at step 0 of that run, before training spends its budget — which symmetries learning from the
probes does not reach.

It prints a table per element — coherence ratio ``ρ(g)`` with its interval beside the element's
random-pair baseline, specific coupling, distribution transfer and forward equivariance error —
the orbit-level numbers, the rank correlation with its p-value, the measurement's health and a
one-line verdict, and writes ``analysis.png`` and ``analysis.json`` (every number, per-sample
values and the settings) into the output folder (default: ``CHECKPOINT_STEM_analysis`` beside the
checkpoint, ``CONFIG_STEM_preflight`` in the working directory without one). ``--report
report.html`` also writes a shareable report (:mod:`symcoherence.cli.report`: self-contained
HTML, or ``--format markdown|json``) with the verdict, the table with intervals, the settings, the
command that reproduces it and, with ``--run LOG_FOLDER``, the statistics over training steps.

Only load checkpoints you trust: like Lightning, this unpickles the checkpoint file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from symcoherence.callbacks._augmentation import draw_probes
from symcoherence.callbacks._isolation import isolated
from symcoherence.callbacks._probes import declared_defaults, find_loss, measured_model
from symcoherence.callbacks._verdict import reading
from symcoherence.cli.lightning import UsageError, explain, lightning_cli
from symcoherence.cli.report import FORMATS, command_line, history, write_report
from symcoherence.coherence import (
    METRIC_NAMES,
    NORMALIZATIONS,
    Measurement,
    MeasurementSpec,
    Projection,
    Summary,
)
from symcoherence.coherence import measure as measure_model


def find_config(checkpoint: Path) -> Path:
    """The ``config.yaml`` that ``symcoherence fit`` saved for the run of ``checkpoint``."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        candidate = folder / "config.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no config.yaml next to {checkpoint} or in its run folder; pass the run's config with "
        "--config CONFIG.yaml"
    )


def load_run(checkpoint: Path | None, config: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Rebuild ``(model, datamodule, checkpoint dict)`` from a run config and load the weights.

    Without a ``checkpoint`` the model keeps the weights the config initializes (seeded with its
    ``seed_everything``) and the dict is ``{"global_step": 0}``.
    """
    try:
        with open(config) as stream:
            run_config = yaml.safe_load(stream) or {}
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(
            f"{config} is not valid YAML{line}; fix the file or pass another"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"--config takes a YAML file, but {config} is a folder") from None
    if not isinstance(run_config, dict) or "model" not in run_config or "data" not in run_config:
        raise ValueError(f"{config} is not a run config: it needs 'model' and 'data' sections")
    arguments = {
        "seed_everything": run_config.get("seed_everything", 0),
        "model": run_config["model"],
        "data": run_config["data"],
        "trainer": {"logger": False, "enable_checkpointing": False, "callbacks": []},
    }
    cli = lightning_cli(arguments, run=False)
    if checkpoint is None:
        return cli.model, cli.datamodule, {"global_step": 0}
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{checkpoint} is not a Lightning checkpoint (no 'state_dict')")
    try:
        cli.model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the model of {config}; pass the config of the "
            f"run that wrote it with --config. Details: {error}"
        ) from None
    return cli.model, cli.datamodule, state


def analyze(
    model: Any,
    datamodule: Any,
    spec: MeasurementSpec,
    *,
    probe_size: int = 16,
    probe_split: str = "val",
    probe_seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    eval_mode: bool = True,
    probe_transform: Any = "auto",
) -> Measurement:
    """Measure a LightningModule on a probe set of its datamodule, exactly as the monitor does.

    Args:
        model: the LightningModule; its ``backbone`` (else itself) is differentiated with its
            ``loss_fn`` (else :func:`~symcoherence.coherence.smse`).
        datamodule: provides ``probe_batch(n, split, seed)`` (or dataloaders) and the declared
            group and field types that complete ``spec``.
        spec: the measurement settings; open group and field types come from the datamodule.
        probe_size: number of probe pairs.
        probe_split: split the probes come from.
        probe_seed: seed of the probe draw.
        optimizer: the restored optimizer (for ``metric="adam"``).
        eval_mode: measure in eval mode, as the monitor does by default.
        probe_transform: as the monitor's (``"auto"``: training probes go through the
            datamodule's augmentation).
    """
    spec = spec.complete(**declared_defaults(datamodule))
    datamodule.prepare_data()
    with isolated(model, [] if optimizer is None else [optimizer], eval_mode):
        inputs, targets, _ = draw_probes(
            datamodule,
            model,
            probe_size,
            probe_split,
            probe_seed,
            field_type=spec.field_type,
            target_field_type=spec.output_field_type,
            transform=probe_transform,
        )
        return measure_model(
            measured_model(model),
            find_loss(model, None),
            inputs,
            targets,
            spec,
            optimizer=optimizer,
        )


def _interval(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def report(summary: Summary, title: str, step: int | None = None) -> str:
    """The printed table: per element, then orbit numbers, health and the verdict.

    With the measured ``step`` the verdict is also given in words (the monitor's text).
    """
    header = (
        f"{'element':<10} {'ratio ρ [interval]':>26} {'baseline':>9} "
        f"{'coupling z [interval]':>26} {'transfer τ [interval]':>26} {'E median':>9} {'E q3':>9}"
    )
    rule = "-" * len(header)
    lines = [title, rule, header, rule]
    for row in summary:
        lines.append(
            f"{row.element:<10} {_interval(row.ratio, row.ratio_lo, row.ratio_hi):>26} "
            f"{row.baseline:>9.3f} "
            f"{_interval(row.coupling, row.coupling_lo, row.coupling_hi):>26} "
            f"{_interval(row.transfer, row.transfer_lo, row.transfer_hi):>26} "
            f"{row.equivariance_median:>9.3g} {row.equivariance_q3:>9.3g}"
        )
    lines.append(rule)
    lines.append(
        f"basin compatibility (min over g ≠ e of {summary.rule.statistic}): "
        f"{_interval(summary.compatibility, summary.compatibility_lo, summary.compatibility_hi)}"
        f", {summary.suppressed_count} flagged"
    )
    lines.append(
        f"the paper's ratios: orbit coherence {summary.orbit:.3f}, random-pair baseline over "
        f"all elements {summary.baseline:.3f}"
    )
    if summary.rank_corr is None:
        lines.append("rank correlation of ρ with |log E| (q3): undefined (constant or too few)")
    else:
        lines.append(
            f"rank correlation of ρ with |log E| (q3): {summary.rank_corr:+.3f} "
            f"(permutation p = {summary.rank_corr_pvalue:.3f})"
        )
    health = ", ".join(f"{name} {value:.3g}" for name, value in summary.health.items())
    lines.append(f"measurement: {health}")
    lines.append(f"intervals: {round(100 * summary.confidence)} % paired bootstrap over probes")
    lines.append(f"verdict: {summary.verdict()}")
    if step is not None:
        lines.append(f"reading: {reading(summary, step)}")
    return "\n".join(lines)


def to_json(measurement: Measurement, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything, as plain data."""

    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.tolist()
        return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)

    summary = measurement.summary()
    return {
        "settings": settings,
        "summary": measurement.scalars(),
        "elements": [dataclasses.asdict(row) for row in summary],
        "rank_correlation": {"r": summary.rank_corr, "pvalue": summary.rank_corr_pvalue},
        "per_sample": {
            "influence": measurement.influence.influence.tolist(),
            "specific_coupling": measurement.influence.coupling.tolist(),
            "equivariance_error": plain(measurement.equivariance),
        },
        "solver_info": {k: plain(v) for k, v in measurement.influence.info.items()},
    }


def _restored_optimizer(model: Any, state: dict[str, Any]) -> torch.optim.Optimizer:
    configured = model.configure_optimizers()
    optimizer = configured[0] if isinstance(configured, (list, tuple)) else configured
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    saved = state.get("optimizer_states") or []
    if not saved:
        raise ValueError("metric 'adam' needs the optimizer state, which this checkpoint lacks")
    optimizer.load_state_dict(saved[0])
    return optimizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symcoherence analyze",
        description="The monitor's orbit-influence measurement of a checkpoint.",
        allow_abbrev=False,
        exit_on_error=False,
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="a .ckpt written by symcoherence fit (none: the config's initialized model)",
    )
    parser.add_argument("--config", type=Path, help="run config (default: the run's config.yaml)")
    parser.add_argument("--group", help="group such as D4 (default: the data's diagnostic group)")
    parser.add_argument("--elements", nargs="+", help="element names (default: all)")
    parser.add_argument(
        "--metric",
        choices=METRIC_NAMES,
        default="identity",
        help="'gauss_newton' is the reference Gauss–Newton metric, as in the monitor",
    )
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="standard")
    parser.add_argument("--probe-size", type=int, default=16)
    parser.add_argument("--probe-split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--probe-seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.9, help="interval level")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--projection-dim",
        type=int,
        metavar="D",
        help="measure on seeded random projections of the gradients to D numbers (large models; "
        "identity and adam metrics)",
    )
    parser.add_argument("--projection-seed", type=int, default=0, help="seed of the projection")
    parser.add_argument("--output", type=Path, help="output folder (default: beside checkpoint)")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="also write a shareable report (self-contained HTML; .md or .json by suffix)",
    )
    parser.add_argument("--format", choices=FORMATS, help="report format (default: by suffix)")
    parser.add_argument(
        "--run",
        type=Path,
        metavar="LOG_FOLDER",
        help="a run's TensorBoard folder: the report adds the statistics over training steps",
    )
    return parser


def analyze_main(argv: Sequence[str]) -> str:
    """``symcoherence analyze``: write ``analysis.png`` and ``analysis.json``; return the report.

    Raises:
        UsageError: (one line, status 2 from the command) for bad arguments, a missing or
            incompatible checkpoint or config, or a group that does not fit the data.
    """
    parser = _parser()
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise UsageError(str(error)) from None
    if unknown:
        raise UsageError(explain(f"unrecognized arguments: {' '.join(unknown)}", parser))
    if (args.format or args.run) and args.report is None:
        raise UsageError("--format and --run shape the report; give --report FILE too")
    if args.projection_seed and args.projection_dim is None:
        raise UsageError("--projection-seed sets the seed of --projection-dim D; give D too")
    try:
        spec = MeasurementSpec(
            group=args.group,
            elements=args.elements,
            metric=args.metric,
            normalization=args.normalization,
            confidence=args.confidence,
            resamples=args.resamples,
            projection=None
            if args.projection_dim is None
            else Projection(args.projection_dim, args.projection_seed),
        )
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    checkpoint = args.checkpoint
    if checkpoint is None and args.config is None:
        raise UsageError(
            "give a CHECKPOINT to analyse, or --config CONFIG.yaml without one to measure the "
            "model that config initializes (the preflight check)"
        )
    if checkpoint is not None and not checkpoint.is_file():
        raise UsageError(f"checkpoint {checkpoint} does not exist")
    if checkpoint is None and args.metric == "adam":
        raise UsageError(
            "--metric adam reads the optimizer's second moments, which an initialized model does "
            "not have yet; use --metric identity or gauss_newton, or give a checkpoint"
        )
    try:
        config = args.config or find_config(checkpoint)
        if not config.exists():
            raise FileNotFoundError(f"config {config} does not exist")
        model, datamodule, state = load_run(checkpoint, config)
        optimizer = _restored_optimizer(model, state) if args.metric == "adam" else None
        measurement = analyze(
            model,
            datamodule,
            spec,
            probe_size=args.probe_size,
            probe_split=args.probe_split,
            probe_seed=args.probe_seed,
            optimizer=optimizer,
        )
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if checkpoint is None:
        output = args.output or Path(f"{config.stem}_preflight")
        measured = f"the model {config.name} initializes (step 0, before training)"
    else:
        output = args.output or checkpoint.with_name(f"{checkpoint.stem}_analysis")
        measured = f"checkpoint {checkpoint.name} (step {state.get('global_step', '?')})"
    output.mkdir(parents=True, exist_ok=True)
    summary = measurement.summary()
    title = (
        f"{summary.group}, {spec.metric_name} metric, {spec.normalization} normalization, "
        f"N = {args.probe_size} {args.probe_split} probes (seed {args.probe_seed}), {measured}"
    )
    settings = {
        **spec.record(),
        "group": summary.group,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "config": str(config),
        "probe_size": args.probe_size,
        "probe_split": args.probe_split,
        "probe_seed": args.probe_seed,
    }
    step = state.get("global_step")
    document = to_json(measurement, settings)
    if isinstance(step, int):
        document["reading"] = reading(summary, step)
    (output / "analysis.json").write_text(json.dumps(document, indent=2))
    _write_figure(summary, title, output / "analysis.png")
    written = f"wrote {output / 'analysis.json'} and {output / 'analysis.png'}"
    if args.report is not None:
        try:
            series = (
                None
                if args.run is None
                else history(args.run, summary.group, summary.rule.statistic)
            )
        except FileNotFoundError as error:
            raise UsageError(str(error)) from None
        write_report(
            args.report,
            summary,
            title=title,
            step=step if isinstance(step, int) else None,
            settings=settings,
            command=command_line(argv),
            probes=f"{args.probe_size} {args.probe_split} probes",
            series=series,
            report_format=args.format,
        )
        written += f" and the report {args.report}"
    return f"{report(summary, title, step if isinstance(step, int) else None)}\n\n{written}"


def _write_figure(summary: Summary, title: str, path: Path) -> None:
    from symcoherence.plotting import summary_figure

    figure = summary_figure(summary, title)
    figure.savefig(path, dpi=120, bbox_inches="tight")
