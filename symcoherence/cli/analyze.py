r"""Checkpoint analysis: orbit influence and forward equivariance error of a trained emulator.

``symcoherence analyze CHECKPOINT`` rebuilds the run's model and datamodule from its config (the
``config.yaml`` that ``symcoherence fit`` saves beside the logs, or ``--config``), loads the
checkpoint's weights, draws a probe set from distinct trajectories and computes, per element ``g``,

* the normalized diagonal influence ``I_n(g) = Ĥ^g[n, n]`` (median and quartiles),
* the coherence ratio ``ρ(g) = median_n I_n(g) / median_n I_n(e)``,
* the forward equivariance error ``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)``
  (median and q3),

prints them as a table and writes a PNG figure and a JSON file with every number (the summary
under the logged key names, the per-sample values and the settings).

Only load checkpoints you trust: like Lightning, this unpickles the checkpoint file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from symcoherence.coherence import (
    METRIC_NAMES,
    NORMALIZATIONS,
    GaussNewton,
    Metric,
    OrbitInfluence,
    equivariance_error,
    orbit_influence,
)
from symcoherence.groups import resolve_group


@dataclass
class Analysis:
    """The numbers of one analysis: the influence result and the forward errors ``(K, N)``."""

    result: OrbitInfluence
    equivariance: torch.Tensor

    @cached_property
    def summary(self) -> dict[str, float]:
        """The logged scalars (DESIGN §3.3 keys), equivariance errors included."""
        return self.result.summary(equivariance=self.equivariance)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per element: influence median/q1/q3, ratio, equivariance median/q3."""
        group, summary = self.result.group_name, self.summary
        return [
            {
                "element": element,
                "influence_median": summary[f"influence/{group}/{element}/median"],
                "influence_q1": summary[f"influence/{group}/{element}/q1"],
                "influence_q3": summary[f"influence/{group}/{element}/q3"],
                "ratio": summary[f"coherence/{group}/ratio/{element}"],
                "equivariance_median": summary[f"equivariance/{group}/{element}/median"],
                "equivariance_q3": summary[f"equivariance/{group}/{element}/q3"],
            }
            for element in self.result.elements
        ]

    def table(self) -> str:
        """A fixed-width text table, one row per element."""
        header = (
            f"{'element':<12} {'influence median [q1, q3]':>30} {'ratio':>8} "
            f"{'E median':>10} {'E q3':>10}"
        )
        lines = [header, "-" * len(header)]
        for row in self.rows():
            spread = (
                f"{row['influence_median']:.3f} [{row['influence_q1']:.3f}, "
                f"{row['influence_q3']:.3f}]"
            )
            lines.append(
                f"{row['element']:<12} {spread:>30} {row['ratio']:>8.3f} "
                f"{row['equivariance_median']:>10.3g} {row['equivariance_q3']:>10.3g}"
            )
        summary, group = self.summary, self.result.group_name
        lines.append("-" * len(header))
        lines.append(
            f"orbit coherence {summary[f'coherence/{group}/orbit']:.3f}   basin compatibility "
            f"{summary[f'basin/{group}/compatibility']:.3f}   off-diagonal baseline "
            f"{summary[f'baseline/{group}/offdiag_median']:.3f}"
        )
        return "\n".join(lines)

    def to_json(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Everything, as plain data."""
        return {
            "settings": settings,
            "summary": self.summary,
            "elements": self.rows(),
            "per_sample": {
                "influence": self.result.influence.tolist(),
                "equivariance_error": self.equivariance.tolist(),
            },
            "solver_info": {k: _plain(v) for k, v in self.result.info.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


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


def load_run(checkpoint: Path, config: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Rebuild ``(model, datamodule, checkpoint dict)`` from a run config and load the weights."""
    from symcoherence.cli import lightning_cli

    with open(config) as stream:
        run_config = yaml.safe_load(stream) or {}
    if not isinstance(run_config, dict) or "model" not in run_config or "data" not in run_config:
        raise ValueError(f"{config} is not a run config: it needs 'model' and 'data' sections")
    arguments = {
        "seed_everything": run_config.get("seed_everything", 0),
        "model": run_config["model"],
        "data": run_config["data"],
        "trainer": {"logger": False, "enable_checkpointing": False, "callbacks": []},
    }
    cli = lightning_cli(arguments, run=False)
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
    group: Any = None,
    elements: Sequence[str] | None = None,
    metric: str | Metric = "identity",
    normalization: str = "standard",
    probe_size: int = 16,
    probe_split: str = "val",
    probe_seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> Analysis:
    """Orbit influence and forward error of ``model.backbone`` on a probe set of ``datamodule``.

    Args:
        model: an :class:`~symcoherence.models.EmulatorModule` (``backbone``, ``loss_fn``).
        datamodule: a :class:`~symcoherence.data.TrajectoryDataModule`.
        group: a group, a name (``"D4"``) or ``None`` for the datamodule's declared group.
        elements: element names (default: all).
        metric: ``"identity"``, ``"adam"``, ``"gauss_newton"`` or a
            :class:`~symcoherence.coherence.Metric` such as ``GaussNewton(solver="subspace")``.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"``.
        probe_size: number of probe pairs, from distinct trajectories.
        probe_split: split the probes come from.
        probe_seed: seed of the probe draw.
        optimizer: the restored optimizer (for ``metric="adam"``).
    """
    declared = datamodule.symmetry_group
    resolved = declared if group is None else resolve_group(group, default=declared)
    if resolved is None:
        raise ValueError("the datamodule declares no symmetry group; pass --group, e.g. D4")
    datamodule.prepare_data()
    inputs, targets = datamodule.probe_batch(probe_size, split=probe_split, seed=probe_seed)
    backbone = model.backbone.eval()
    types = {"field_type": datamodule.field_type, "target_field_type": datamodule.target_field_type}
    result = orbit_influence(
        backbone,
        model.loss_fn,
        inputs,
        targets,
        resolved,
        elements=elements,
        metric=metric,
        normalization=normalization,
        optimizer=optimizer,
        **types,
    )
    with torch.no_grad():
        errors = equivariance_error(
            backbone, model.loss_fn, inputs, targets, resolved, elements=result.elements, **types
        )
    return Analysis(result, errors)


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
        description="Orbit influence and forward equivariance error of a checkpoint.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by symcoherence fit")
    parser.add_argument("--config", type=Path, help="run config (default: the run's config.yaml)")
    parser.add_argument("--group", help="group name such as D4 (default: the dataset's group)")
    parser.add_argument("--elements", nargs="+", help="element names (default: all)")
    parser.add_argument("--metric", choices=METRIC_NAMES, default="identity")
    parser.add_argument(
        "--solver",
        choices=("subspace", "cg"),
        default="subspace",
        help="Gauss–Newton solver: 'subspace' (exact within the span of the probe gradients, "
        "fast) or 'cg' (matrix-free conjugate gradients on the full metric, slow on a CPU)",
    )
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="standard")
    parser.add_argument("--probe-size", type=int, default=16)
    parser.add_argument("--probe-split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--probe-seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="output folder (default: next to checkpoint)")
    return parser


def analyze_main(argv: Sequence[str]) -> str:
    """``symcoherence analyze``: write ``analysis.png`` and ``analysis.json``; return the report.

    Exits through ``argparse`` (status 2, message on stderr) for bad arguments, a missing or
    incompatible checkpoint or config, or a group that does not fit the data.
    """
    parser = _parser()
    args = parser.parse_args(list(argv))
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    try:
        config = args.config or find_config(args.checkpoint)
        if not config.is_file():
            raise FileNotFoundError(f"config {config} does not exist")
        model, datamodule, state = load_run(args.checkpoint, config)
        optimizer = _restored_optimizer(model, state) if args.metric == "adam" else None
        metric = GaussNewton(solver=args.solver) if args.metric == "gauss_newton" else args.metric
        analysis = analyze(
            model,
            datamodule,
            group=args.group,
            elements=args.elements,
            metric=metric,
            normalization=args.normalization,
            probe_size=args.probe_size,
            probe_split=args.probe_split,
            probe_seed=args.probe_seed,
            optimizer=optimizer,
        )
    except (FileNotFoundError, ValueError, TypeError) as error:
        parser.error(str(error))
    output = args.output or args.checkpoint.with_name(f"{args.checkpoint.stem}_analysis")
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "checkpoint": str(args.checkpoint),
        "config": str(config),
        "group": analysis.result.group_name,
        "metric": args.metric if args.metric != "gauss_newton" else f"gauss_newton/{args.solver}",
        "normalization": args.normalization,
        "probe_size": args.probe_size,
        "probe_split": args.probe_split,
        "probe_seed": args.probe_seed,
    }
    (output / "analysis.json").write_text(json.dumps(analysis.to_json(settings), indent=2))
    _write_figure(analysis, output / "analysis.png")
    return f"{analysis.table()}\n\nwrote {output / 'analysis.json'} and {output / 'analysis.png'}"


def _write_figure(analysis: Analysis, path: Path) -> None:
    from symcoherence.callbacks._tensorboard import summary_figure

    figure = summary_figure(
        analysis.result.elements,
        analysis.result.influence,
        analysis.equivariance,
        title=f"{analysis.result.group_name}: orbit influence and forward equivariance error",
    )
    try:
        figure.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
