"""The controlled experiment, replicated: does orbit influence see a symmetry that the data break?

Protocol (one command, writes ``experiments/RESULTS.md``, ``experiments/results.json`` and one
figure per variant under ``experiments/figures/``):

* **variants** (``configs/experiment/``): isotropic and anisotropic (x-elongated) decaying
  turbulence, anisotropic with D4 augmentation, anisotropic with the exactly equivariant
  ``GroupAveraged`` backbone, and a forced, statistically steady Kolmogorov flow;
* each variant is trained with the ``symcoherence`` LightningCLI (``base.yaml`` + the variant file)
  for every training seed (``seed_everything``; initialization and batch order differ, the data do
  not), on a 16² grid;
* each trained model is measured on several probe draws of N probes from distinct validation
  trajectories under every metric: ``identity``, ``adam`` (the trained optimizer's second
  moments), the reference Gauss–Newton (preconditioned cg) with the probe-batch χ and with the
  orbit-batch χ, and the paper's ``subspace`` Galerkin approximation; the Kolmogorov models are
  measured over D4 (negative control: six elements are not symmetries of the forced flow) and
  over the data's ``diagnostic_group`` (all symmetries);
* every statistic (coherence ratio ρ with its random-pair baseline, specific coupling z,
  distribution transfer τ, forward error E) is reported per element as the median over seeds ×
  draws of the per-measurement value, the median of the 90 % bootstrap bounds over probes, and the
  spread (min–max) of the per-seed medians; rank correlations with |log E| with permutation p;
* candidate decision rules are scored: false-positive rate on the null variants (isotropic data,
  the group-averaged model; flagged / measured elements over seeds × draws) and hit rate on the
  axis-swapping elements r, r3, sr, sr3 of the anisotropic data;
* the Kolmogorov control first checks the true solver: the one-step defect
  ``d(g) = ‖S(g·x) − g·S(x)‖ / ‖S(x) − x‖`` on the probes, against the model's relative error
  ``‖f(x) − S(x)‖ / ‖S(x) − x‖``.

    python experiments/controlled_experiment.py            # full protocol (~1 h on 2 CPU cores)
    python experiments/controlled_experiment.py --quick    # toy size, seconds (the test suite)
    python experiments/controlled_experiment.py --variants isotropic --seeds 1 --draws 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "experiment"
VARIANTS = (
    "isotropic",
    "anisotropic",
    "anisotropic_augmented",
    "anisotropic_group_averaged",
    "kolmogorov",
)
METRICS = ("identity", "adam", "gn_probes", "gn_orbit", "ekfac_probes", "ekfac_orbit", "subspace")
METRIC_LABELS = {
    "identity": "identity",
    "adam": "adam",
    "gn_probes": "Gauss–Newton cg, probe-batch χ",
    "gn_orbit": "Gauss–Newton cg, orbit-batch χ",
    "ekfac_probes": "Gauss–Newton EK-FAC, probe-batch χ",
    "ekfac_orbit": "Gauss–Newton EK-FAC, orbit-batch χ",
    "subspace": "Gauss–Newton subspace (paper)",
}
# approximation -> the exact reference it is compared with on the same probes
REFERENCES = {"ekfac_probes": "gn_probes", "ekfac_orbit": "gn_orbit"}
STATISTICS = ("ratio", "coupling", "transfer")
NULL_VARIANTS = ("isotropic", "anisotropic_group_averaged")
FAILING = ("r", "r3", "sr", "sr3")  # axis-swapping elements: the x-elongated data break them
# Kolmogorov forcing sin(2π k y): of D4 only e and sr2 (y -> -y) fix it without a shift.
KOLMOGOROV_ADMISSIBLE = ("e", "sr2")
CANDIDATE_RULES = (
    ("transfer", 0.0),
    ("transfer", 0.5),
    ("ratio", "baseline"),
    ("ratio", 0.5),
    ("coupling", 0.0),
    ("coupling", 1.0),
)
DEFAULT_RULE = ("transfer", 0.0)  # the library default when this script was written


@dataclass(frozen=True)
class Settings:
    """Size of one run of the protocol."""

    variants: tuple[str, ...] = VARIANTS
    seeds: int = 3
    draws: int = 3
    probes: int = 48
    steps: int = 400
    grid: int = 16
    trajectories: int = 200
    frames: int = 8
    metrics: tuple[str, ...] = METRICS
    resamples: int = 1000
    budget_minutes: float = 52.0
    out: Path = ROOT / "experiments"
    cache_dir: Path = ROOT / "data_cache"
    quick: bool = False

    def quick_size(self) -> Settings:
        """Toy size for the test suite: 8² grid, 1 seed × 1 draw, 8 probes, few steps."""
        return dataclasses.replace(
            self,
            seeds=1,
            draws=1,
            probes=8,
            steps=6,
            grid=8,
            trajectories=30,
            frames=3,
            metrics=("identity", "subspace"),
            resamples=200,
            quick=True,
        )


def log(message: str) -> None:
    """Progress on stdout, with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------- training
def training_args(variant: str, seed: int, settings: Settings) -> list[str]:
    """LightningCLI ``fit`` arguments: base.yaml + the variant file + the protocol's overrides."""
    source = "--data.init_args.source.init_args"
    args = [
        "fit",
        "--config",
        str(CONFIGS / "base.yaml"),
        "--config",
        str(CONFIGS / f"{variant}.yaml"),
        f"--seed_everything={seed}",
        f"--trainer.max_steps={settings.steps}",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[]",
        # the CLI saves each run's config.yaml there (not in the working directory)
        f"--trainer.default_root_dir={settings.cache_dir / 'experiment_runs' / variant}",
        f"{source}.n={settings.grid}",
        f"{source}.num_trajectories={settings.trajectories}",
        f"{source}.num_frames={settings.frames}",
        f"--data.init_args.cache_dir={settings.cache_dir}",
    ]
    if settings.quick:
        args += [
            "--model.backbone.init_args.width=4",
            "--model.rollout_horizon=0",
            "--trainer.limit_val_batches=0",
            f"{source}.burn_in=0.05",
        ]
    return args


def train(variant: str, seed: int, settings: Settings) -> tuple[Any, Any, Any, float]:
    """Fit one variant for one seed; return the model, its datamodule, its optimizer and seconds."""
    from symcoherence.cli.lightning import lightning_cli

    start = time.perf_counter()
    cli = lightning_cli(training_args(variant, seed, settings))
    optimizer = cli.trainer.optimizers[0]
    return cli.model, cli.datamodule, optimizer, time.perf_counter() - start


# ---------------------------------------------------------------------------------- measuring
def metric_object(name: str) -> Any:
    """The metric behind one of :data:`METRICS`."""
    from symcoherence.coherence import GaussNewton

    return {
        "identity": "identity",
        "adam": "adam",
        "gn_probes": GaussNewton(batch="probes"),
        "gn_orbit": GaussNewton(batch="orbit"),
        "ekfac_probes": GaussNewton(solver="ekfac", batch="probes"),
        "ekfac_orbit": GaussNewton(solver="ekfac", batch="orbit"),
        "subspace": GaussNewton(solver="subspace"),
    }[name]


def row_record(row: Any) -> dict[str, float]:
    """The per-element numbers kept in the JSON (ElementSummary -> plain floats)."""
    return {k: float(v) for k, v in dataclasses.asdict(row).items() if k != "element"}


def rank_correlations(summary: Any, seed: int) -> dict[str, dict[str, float | None]]:
    """Spearman of each statistic with |log E| (q3) over g ≠ e, with permutation p."""
    from symcoherence.coherence.statistics import spearman

    rows = [row for row in summary if row.element != summary.identity]
    error = torch.tensor([abs(math.log(row.equivariance_q3)) for row in rows], dtype=torch.float64)
    out: dict[str, dict[str, float | None]] = {}
    for stat in STATISTICS:
        values = torch.tensor([getattr(row, stat) for row in rows], dtype=torch.float64)
        result = None
        if torch.isfinite(values).all() and torch.isfinite(error).all():
            result = spearman(values, error, seed=seed)
        out[stat] = {"r": None if result is None else result[0]}
        out[stat]["p"] = None if result is None else result[1]
    return out


def measure_model(
    model: Any,
    datamodule: Any,
    optimizer: Any,
    settings: Settings,
    *,
    variant: str,
    seed: int,
    draw: int,
    group: Any,
    group_label: str,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, torch.Tensor]]:
    """Measure one trained model on one probe draw under every metric.

    Returns the records, the summaries and the raw ``H`` matrices ``(K, N, N)``, by metric.
    """
    from symcoherence.cli.analyze import analyze
    from symcoherence.coherence import MeasurementSpec

    records, summaries, matrices = [], {}, {}
    for metric in settings.metrics:
        spec = MeasurementSpec(
            group=group,
            metric=metric_object(metric),
            resamples=settings.resamples,
            seed=draw,
        )
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            measurement = analyze(
                model,
                datamodule,
                spec,
                probe_size=settings.probes,
                probe_seed=1000 + draw,
                optimizer=optimizer if metric == "adam" else None,
            )
            summary = measurement.summary()
        seconds = time.perf_counter() - start
        summaries[metric], matrices[metric] = summary, measurement.influence.matrix
        info = {
            k: float(v)
            for k, v in measurement.influence.info.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        records.append(
            {
                "variant": variant,
                "group": group_label,
                "seed": seed,
                "draw": draw,
                "metric": metric,
                "seconds": seconds,
                "elements": {row.element: row_record(row) for row in summary},
                "identity": summary.identity,
                "rank_corr": {"r": summary.rank_corr, "p": summary.rank_corr_pvalue},
                "rank_corrs": rank_correlations(summary, draw),
                "solver": info,
                "degenerate": float(summary.health.get("degenerate_rows", 0.0)),
                "warnings": sorted({str(w.message)[:160] for w in caught}),
            }
        )
        log(
            f"    {variant} seed {seed} draw {draw} {group_label} {metric}: {seconds:.1f} s; "
            + summary.verdict()
        )
    return records, summaries, matrices


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's r of two 1-D tensors of continuous values (ranks by sorting; ties negligible)."""
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
    return float(torch.corrcoef(ranks)[0, 1])


def attach_agreement(records: list[dict[str, Any]], matrices: dict[tuple, torch.Tensor]) -> None:
    """Score every approximation record against its exact reference on the same probes.

    For each record of a metric in :data:`REFERENCES` whose reference was measured on the same
    model, group and probe draw, adds ``record["agreement"]``: the Spearman correlation of the
    entries of ``H``, the relative Frobenius error ``‖H − H_ref‖_F / ‖H_ref‖_F``, the number of
    elements ``g ≠ e`` with the same verdict under the library's default decision rule, and the
    measurement's time ÷ the identity metric's on the same probes.
    """
    from symcoherence.coherence import DecisionRule
    from symcoherence.coherence.statistics.summary import ElementSummary

    rule = DecisionRule()

    def flagged(record: dict[str, Any], element: str) -> bool:
        return bool(rule.suppressed(ElementSummary(element, **record["elements"][element])))

    def key(record: dict[str, Any], metric: str) -> tuple:
        return (record["variant"], record["group"], record["seed"], record["draw"], metric)

    by_key = {key(r, r["metric"]): r for r in records}
    for record in records:
        reference = by_key.get(key(record, REFERENCES.get(record["metric"], "")))
        if (
            reference is None
            or "agreement" in record
            or key(record, record["metric"]) not in matrices
        ):
            continue
        approx = matrices[key(record, record["metric"])].double().flatten()
        exact = matrices[key(reference, reference["metric"])].double().flatten()
        elements = [e for e in record["elements"] if e != record["identity"]]
        identity = by_key.get(key(record, "identity"))
        record["agreement"] = {
            "reference": reference["metric"],
            "spearman": _rank_correlation(approx, exact),
            "frobenius": float((approx - exact).norm() / exact.norm()),
            "same_verdict": [
                sum(flagged(record, e) == flagged(reference, e) for e in elements),
                len(elements),
            ],
            "cost": record["seconds"] / identity["seconds"] if identity else math.nan,
            "reference_cost": reference["seconds"] / identity["seconds"] if identity else math.nan,
        }


# ---------------------------------------------------------------------------------- Kolmogorov
def solver_defect(datamodule: Any, probes: int, seed: int) -> dict[str, Any]:
    """True-solver one-step defect d(g) of D4 on the un-normalized validation probes (float64).

    ``d(g) = ‖S(g·x) − g·S(x)‖ / ‖S(x) − x‖``; ``S`` integrates one frame interval.
    """
    import symcoherence as sc

    source = datamodule.source
    frames = datamodule.data[datamodule.splits["val"]]  # normalized (M, T, C, n, n)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(frames.shape[0], generator=generator)[:probes]
    x = datamodule.denormalize(frames[chosen, 0]).double()[:, 0]  # (N, n, n) vorticity
    interval = float(source.frame_interval)

    def step(omega: torch.Tensor) -> torch.Tensor:
        return source.solver.rollout(omega, [0.0, interval])[-1]

    d4, kind = sc.groups.D4(), sc.FieldType(["pseudoscalar"])
    sx = step(x)
    increment = (sx - x).flatten(1).norm(dim=1)
    defect = {}
    for element in d4.elements:
        gx = d4.act(element, x[:, None], kind)[:, 0]
        g_sx = d4.act(element, sx[:, None], kind)[:, 0]
        defect[element] = float(((step(gx) - g_sx).flatten(1).norm(dim=1) / increment).median())
    return {"defect": defect, "x": x, "sx": sx}


def model_relative_error(model: Any, datamodule: Any, x: torch.Tensor, sx: torch.Tensor) -> float:
    """Median ``‖f(x) − S(x)‖ / ‖S(x) − x‖`` of a trained model (on the normalized scale)."""
    scale, offset = datamodule.scale, datamodule.offset
    inputs = ((x[:, None] - offset.double()) / scale.double()).float()
    targets = ((sx[:, None] - offset.double()) / scale.double()).float()
    model.eval()
    with torch.no_grad():
        predictions = model(inputs)
    error = (predictions - targets).flatten(1).norm(dim=1)
    increment = (targets - inputs).flatten(1).norm(dim=1)
    return float((error / increment).median())


# ---------------------------------------------------------------------------------- aggregation
def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def aggregate(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (variant, group, metric, element, statistic): median value, bounds, seed spread."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        for element, row in record["elements"].items():
            cells[(record["variant"], record["group"], record["metric"], element)].append(
                {"seed": record["seed"], **row}
            )
    table = {}
    for key, rows in cells.items():
        entry = {}
        for stat in (*STATISTICS, "baseline", "equivariance_median", "equivariance_q3"):
            values = [r[stat] for r in rows]
            bounds = "equivariance" if stat == "equivariance_median" else stat
            per_seed = defaultdict(list)
            for r in rows:
                per_seed[r["seed"]].append(r[stat])
            seed_medians = [_median(v) for v in per_seed.values()]
            finite = [v for v in seed_medians if math.isfinite(v)]
            entry[stat] = {
                "median": _median(values),
                "lo": _median([r.get(f"{bounds}_lo", math.nan) for r in rows]),
                "hi": _median([r.get(f"{bounds}_hi", math.nan) for r in rows]),
                "seed_min": min(finite) if finite else math.nan,
                "seed_max": max(finite) if finite else math.nan,
                "count": len(values),
            }
        table[key] = entry
    return table


def rule_rates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """False-positive and hit rates of every candidate rule under every metric."""
    from symcoherence.coherence import DecisionRule
    from symcoherence.coherence.statistics.summary import ElementSummary

    def flags(record: dict[str, Any], rule: Any, elements: tuple[str, ...] | None):
        out = []
        for element, row in record["elements"].items():
            if element == record["identity"] or (elements is not None and element not in elements):
                continue
            flagged = rule.suppressed(ElementSummary(element, **row))
            out.append(bool(flagged))  # an undefined interval is not a flag
        return out

    results = []
    metrics = sorted({r["metric"] for r in records}, key=METRICS.index)
    for statistic, threshold in CANDIDATE_RULES:
        rule = DecisionRule(statistic, threshold)
        for metric in metrics:
            mine = [r for r in records if r["metric"] == metric]

            def rate(selected, elements=None, rule=rule):
                values = [f for r in selected for f in flags(r, rule, elements)]
                return (sum(values), len(values))

            d4 = [r for r in mine if r["group"] == "D4"]
            entry = {
                "rule": rule.describe(),
                "statistic": statistic,
                "threshold": threshold,
                "metric": metric,
                "null": rate([r for r in d4 if r["variant"] in NULL_VARIANTS]),
                "isotropic": rate([r for r in d4 if r["variant"] == "isotropic"]),
                "group_averaged": rate(
                    [r for r in d4 if r["variant"] == "anisotropic_group_averaged"]
                ),
                "hit": rate([r for r in d4 if r["variant"] == "anisotropic"], FAILING),
                "anisotropic_other": rate(
                    [r for r in d4 if r["variant"] == "anisotropic"], ("r2", "s", "sr2")
                ),
                "augmented": rate([r for r in d4 if r["variant"] == "anisotropic_augmented"]),
                "kolmogorov_inadmissible": rate(
                    [r for r in d4 if r["variant"] == "kolmogorov"],
                    ("r", "r2", "r3", "s", "sr", "sr3"),
                ),
                "kolmogorov_admissible": rate(
                    [r for r in d4 if r["variant"] == "kolmogorov"], ("sr2",)
                ),
                "kolmogorov_diagnostic": rate(
                    [r for r in mine if r["group"] != "D4" and r["variant"] == "kolmogorov"]
                ),
            }
            results.append(entry)
    return results


# ---------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2g}"
    return f"{value:.{digits}g}"


def _cell(entry: dict[str, float]) -> str:
    """``median [lo, hi] (seeds min…max)``."""
    return (
        f"{_fmt(entry['median'])} [{_fmt(entry['lo'])}, {_fmt(entry['hi'])}] "
        f"({_fmt(entry['seed_min'])}…{_fmt(entry['seed_max'])})"
    )


def _rate(pair: tuple[int, int]) -> str:
    flagged, total = pair
    return "—" if not total else f"{flagged}/{total} = {flagged / total:.2f}"


def write_report(
    records: list[dict[str, Any]],
    stages: dict[str, float],
    kolmogorov: dict[str, Any] | None,
    settings: Settings,
    figures: dict[str, str],
    total: float,
    skipped: list[str] | None = None,
) -> str:
    """RESULTS.md as a string."""
    table = aggregate(records)
    rules = rule_rates(records)
    metrics = [m for m in METRICS if any(r["metric"] == m for r in records)]
    groups = sorted(
        {(r["variant"], r["group"]) for r in records},
        key=lambda vg: (VARIANTS.index(vg[0]), vg[1] != "D4"),
    )
    seeds = sorted({r["seed"] for r in records})
    draws = sorted({r["draw"] for r in records})
    lines = [
        "# Controlled experiment: results",
        "",
        f"Produced by `{command_line(settings)}` in {total / 60:.1f} min of wall time on this "
        f"machine ({os.cpu_count()} CPU cores; stage times below). Configs: `configs/experiment/base.yaml` + one variant file, "
        f"run through the `symcoherence` LightningCLI with these overrides: {settings.grid}² grid, "
        f"{settings.trajectories} trajectories × {settings.frames} frames (split 60/30/10 % by "
        f"trajectory), {settings.steps} AdamW steps, seeds {seeds} (`seed_everything`: "
        "initialization and batch order; the data are the same for every seed).",
        "",
        f"Measurement: {len(draws)} probe draws × N = {settings.probes} probe pairs from distinct "
        "validation trajectories, `standard` normalization, eval mode, "
        f"{settings.resamples} bootstrap resamples. Metrics: "
        + ", ".join(f"`{m}` ({METRIC_LABELS[m]})" for m in metrics)
        + f". Gauss–Newton: relative damping α = {metric_object('gn_probes').relative_damping:g} "
        "(λ = α·tr(η)/P).",
        "",
        "How to read a cell: `median [lo, hi] (a…b)` = median over seeds × draws of the "
        "per-measurement statistic, the medians of its 90 % bootstrap bounds over probes, and "
        "the range of the per-seed medians. ρ: coherence ratio (`standard`, 1 = identity's); "
        "baseline: ρ's random-pair baseline of that element; z: specific coupling (≈ 0: no "
        "orbit-specific coupling); τ: distribution transfer (1 = the data teach the model about "
        "g·x as much as about x; < 0: a step on the data raises the loss at g·x); E: forward "
        "error loss(f(g·x), g·y) / loss(f(x), y), median (q3).",
        "",
        "## Stages (wall time)",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in stages.items()]
    lines += [f"| **total** | **{total:.0f}** |", ""]
    counts = defaultdict(int)
    for record in records:
        counts[record["metric"]] += 1
    lines += [
        "Measurements done per metric (variant × group × seed × draw): "
        + ", ".join(f"{m}: {counts[m]}" for m in metrics)
        + ".",
        "",
    ]
    refused = [s for s in skipped if ": refused (" in s]
    late = [s for s in skipped if s not in refused]
    if late:
        lines += [
            f"**Not measured** (time budget of {settings.budget_minutes:g} min reached): "
            f"{len(late)} measurements, e.g. " + "; ".join(late[:6]) + ".",
            "",
        ]
    if refused:
        lines += [
            f"**Refused by the metric**: {len(refused)} measurements, e.g. "
            + "; ".join(refused[:2])
            + ".",
            "",
        ]

    # ---- headline: the rule with the best hit rate at a null false-positive rate ≤ 5 %
    lines += ["## Headline", ""]
    lines += headline_lines(rules)
    lines.append("")

    lines += agreement_lines(records)

    # ---- decision rules
    lines += [
        "## Decision rules: false-positive rate and hit rate",
        "",
        "A rule flags an element g ≠ e as *suppressed* when the upper end of the statistic's 90 % "
        "interval lies below the threshold. False positives: flagged / measured elements over "
        "seeds × draws on the null variants (isotropic data; the group-averaged model, exact "
        "equivariance). Hits: flagged / measured among r, r3, sr, sr3 of the anisotropic data "
        "(the elements the model fails on). Also shown: the anisotropic data's other elements "
        "(r2, s, sr2), the augmented model (E ≈ 1), and the Kolmogorov model over D4 "
        "(inadmissible r, r2, r3, s, sr, sr3 vs admissible sr2) and over its diagnostic group "
        "(all admissible).",
        "",
        "| rule | metric | FPR null | FPR isotropic | FPR group-avg | hit r,r3,sr,sr3 "
        "| aniso r2,s,sr2 | augmented | Kolmogorov inadmissible | Kolmogorov sr2 "
        "| Kolmogorov diagnostic |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in rules:
        lines.append(
            f"| {entry['rule']} | {entry['metric']} | {_rate(entry['null'])} "
            f"| {_rate(entry['isotropic'])} | {_rate(entry['group_averaged'])} "
            f"| {_rate(entry['hit'])} | {_rate(entry['anisotropic_other'])} "
            f"| {_rate(entry['augmented'])} | {_rate(entry['kolmogorov_inadmissible'])} "
            f"| {_rate(entry['kolmogorov_admissible'])} | {_rate(entry['kolmogorov_diagnostic'])} |"
        )
    lines.append("")

    # ---- Kolmogorov solver check
    if kolmogorov:
        lines += [
            "## Kolmogorov control: the true solver",
            "",
            "One-step defect of the true solver over one frame interval, median over "
            f"{kolmogorov['probes']} validation states (float64): "
            "d(g) = ‖S(g·x) − g·S(x)‖ / ‖S(x) − x‖ (0 for a symmetry). Beside it the trained "
            "models' relative one-step error ‖f(x) − S(x)‖ / ‖S(x) − x‖ (median over the same "
            "states; per seed). A model as good as that cannot reach E(g) ≈ 1 on an element with "
            "d(g) ≫ its error: E(g) ≈ (d² + ε²)/ε² for independent errors.",
            "",
            "| element | " + " | ".join(kolmogorov["defect"]) + " |",
            "|---|" + "---:|" * len(kolmogorov["defect"]),
            "| d(g) | " + " | ".join(_fmt(v) for v in kolmogorov["defect"].values()) + " |",
            "",
            "Model relative error per seed: "
            + ", ".join(_fmt(v) for v in kolmogorov["model_error"])
            + ".",
            "",
        ]

    # ---- rank correlations
    lines += [
        "## Rank correlation with the forward error",
        "",
        "Spearman r of each statistic with |log E| (q3) over the 7 elements g ≠ e (for D4), "
        "median over seeds × draws, with the median permutation p and how many of the "
        "measurements reach p < 0.05. (A statistic that falls where the model fails has r < 0.)",
        "",
        "| variant | group | metric | ρ: r (p) [# p<0.05] | z: r (p) [#] | τ: r (p) [#] |",
        "|---|---|---|---|---|---|",
    ]
    for variant, group in groups:
        for metric in metrics:
            mine = [
                r
                for r in records
                if r["variant"] == variant and r["group"] == group and r["metric"] == metric
            ]
            cells = []
            for stat in STATISTICS:
                rs = [
                    r["rank_corrs"][stat]["r"]
                    for r in mine
                    if r["rank_corrs"][stat]["r"] is not None
                ]
                ps = [
                    r["rank_corrs"][stat]["p"]
                    for r in mine
                    if r["rank_corrs"][stat]["p"] is not None
                ]
                if not rs:
                    cells.append("n/a")
                    continue
                significant = sum(p < 0.05 for p in ps)
                cells.append(
                    f"{statistics.median(rs):+.2f} ({statistics.median(ps):.2f}) "
                    f"[{significant}/{len(mine)}]"
                )
            lines.append(f"| {variant} | {group} | {metric} | " + " | ".join(cells) + " |")
    lines.append("")

    # ---- per variant tables
    lines += ["## Per variant", ""]
    for variant, group in groups:
        title = f"### {variant}" + (
            "" if group == "D4" else f" (over its diagnostic group {group})"
        )
        lines += [title, ""]
        if (variant, group) in figures:
            lines += [f"![{variant} {group}]({figures[(variant, group)]})", ""]
        elements = list(
            next(r for r in records if r["variant"] == variant and r["group"] == group)["elements"]
        )
        present = [m for m in metrics if (variant, group, m, elements[0]) in table]
        first = present[0]
        lines += [
            "Forward error E (the same for every metric):",
            "",
            "| element | E median | E q3 |",
            "|---|---|---|",
        ]
        for element in elements:
            entry = table[(variant, group, first, element)]
            lines.append(
                f"| {element} | {_cell(entry['equivariance_median'])} "
                f"| {_fmt(entry['equivariance_q3']['median'])} |"
            )
        lines.append("")
        for metric in present:
            lines += [
                f"**{METRIC_LABELS[metric]}**",
                "",
                "| element | ρ | baseline | z | τ |",
                "|---|---|---:|---|---|",
            ]
            for element in elements:
                entry = table[(variant, group, metric, element)]
                lines.append(
                    f"| {element} | {_cell(entry['ratio'])} | {_fmt(entry['baseline']['median'])} "
                    f"| {_cell(entry['coupling'])} | {_cell(entry['transfer'])} |"
                )
            lines.append("")
        mine = [r for r in records if r["variant"] == variant and r["group"] == group]
        degenerate = sum(r["degenerate"] for r in mine)
        warned = sorted({w for r in mine for w in r["warnings"]})
        seconds = sum(r["seconds"] for r in mine)
        lines.append(
            f"Measurements: {len(mine)}, {seconds:.0f} s; degenerate rows: {degenerate:.0f}."
        )
        if warned:
            lines.append("Warnings: " + "; ".join(w.replace("\n", " ") for w in warned[:3]))
        lines.append("")
    return "\n".join(lines) + "\n"


def agreement_lines(records: list[dict[str, Any]]) -> list[str]:
    """The approximations against their exact references on the same probes (a table)."""
    scored = [r for r in records if "agreement" in r]
    if not scored:
        return []

    def spread(values: list[float]) -> str:
        return f"{_fmt(_median(values))} ({_fmt(min(values))}…{_fmt(max(values))})"

    lines = [
        "## Kronecker-factored Gauss–Newton (EK-FAC) against the exact reference",
        "",
        "Each EK-FAC measurement against the cg reference of the same batch on the same model and "
        "probes: the Spearman correlation of the entries of H, the relative Frobenius error "
        "‖H − H_ref‖/‖H_ref‖, the elements g ≠ e whose verdict under the default rule (τ's "
        "interval below 0.5) is the same, and each metric's time ÷ the identity metric's on the "
        "same probes; `median (min…max)` over seeds × draws. Per-element τ with intervals: the "
        "per-variant tables below.",
        "",
        "| variant | group | metric | n | Spearman of H | ‖ΔH‖/‖H‖ | same verdict | time ÷ identity | reference's time ÷ identity |",
        "|---|---|---|---:|---|---|---|---|---|",
    ]
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in scored:
        cells[(record["variant"], record["group"], record["metric"])].append(record["agreement"])
        cells[("all", "", record["metric"])].append(record["agreement"])
    for (variant, group, metric), entries in sorted(
        cells.items(),
        key=lambda item: (item[0][0] == "all", item[0][0], item[0][1], METRICS.index(item[0][2])),
    ):
        same = [sum(e["same_verdict"][i] for e in entries) for i in (0, 1)]
        label = "**all**" if variant == "all" else variant
        lines.append(
            f"| {label} | {group} | {metric} | {len(entries)} | "
            f"{spread([e['spearman'] for e in entries])} | "
            f"{spread([e['frobenius'] for e in entries])} | {_rate(tuple(same))} | "
            f"{spread([e['cost'] for e in entries])} | {spread([e['reference_cost'] for e in entries])} |"
        )
    return [*lines, ""]


def headline_lines(rules: list[dict[str, Any]], max_fpr: float = 0.05) -> list[str]:
    """Which rule separates failing from healthy elements: best hit rate with null FPR ≤ max."""

    def fraction(pair: tuple[int, int]) -> float:
        return pair[0] / pair[1] if pair[1] else math.nan

    usable = [r for r in rules if r["null"][1] and r["hit"][1] and fraction(r["null"]) <= max_fpr]
    if not usable:
        return [f"No candidate rule keeps the null false-positive rate at or below {max_fpr:.0%}."]
    usable.sort(key=lambda r: (-fraction(r["hit"]), fraction(r["null"]), r["metric"]))
    lines = [
        f"Rules with a null false-positive rate ≤ {max_fpr:.0%} (isotropic + group-averaged), "
        "best hit rate on r, r3, sr, sr3 of the anisotropic data first:",
        "",
    ]
    for r in usable[:6]:
        lines.append(
            f"- `DecisionRule({r['statistic']!r}, {r['threshold']!r})` under `{r['metric']}`: "
            f"hits {_rate(r['hit'])}, null FPR {_rate(r['null'])}, flags on the anisotropic "
            f"r2, s, sr2 {_rate(r['anisotropic_other'])}, on the augmented model "
            f"{_rate(r['augmented'])}, on Kolmogorov's inadmissible elements "
            f"{_rate(r['kolmogorov_inadmissible'])}"
        )
    return lines


def command_line(settings: Settings) -> str:
    """The command that reproduces ``settings`` (the options that differ from the defaults)."""
    words = ["python experiments/controlled_experiment.py"]
    reference = Settings()
    if settings.quick:
        words.append("--quick")
        reference = reference.quick_size()
    for name in ("variants", "metrics", "seeds", "draws", "probes", "steps"):
        value = getattr(settings, name)
        if value != getattr(reference, name):
            shown = " ".join(value) if isinstance(value, tuple) else str(value)
            words.append(f"--{name} {shown}")
    if Path(settings.out).resolve() != reference.out.resolve():
        out = Path(settings.out).resolve()
        words.append(f"--out {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return " ".join(words)


def _label(record: dict[str, Any]) -> str:
    """``"variant seed S draw D group metric"``, the name of one measurement."""
    return (
        f"{record['variant']} seed {record['seed']} draw {record['draw']} {record['group']} "
        f"{record['metric']}"
    )


def report_from_json(path: Path, settings: Settings, merge: list[Path] | None = None) -> str:
    """Rewrite RESULTS.md (and results.json) from a results.json of an earlier run.

    ``merge``: results.json files of further runs of this script with the same settings (e.g. a
    second process that measured the Gauss–Newton reference on re-trained seeds, which are
    bit-identical on a CPU); their records are added and measurements they cover are no longer
    listed as skipped. Their stage times are added under "parallel run: ...".
    """
    payload = json.loads(path.read_text())
    for extra_path in merge or []:
        extra = json.loads(extra_path.read_text())
        covered = {_label(r) for r in extra["records"]}
        payload["records"] = [  # a measurement that a merged run repeated counts once
            r for r in payload["records"] if _label(r) not in {_label(e) for e in extra["records"]}
        ] + extra["records"]
        payload["skipped"] = [  # a skipped or refused measurement the merged run made
            s for s in payload.get("skipped", []) if s.split(": refused (")[0] not in covered
        ]
        payload["skipped"] += extra.get("skipped", [])
        for stage, seconds in extra["stages"].items():
            name = stage if stage.startswith("parallel run: ") else f"parallel run: {stage}"
            payload["stages"][name] = payload["stages"].get(name, 0.0) + seconds
        if extra.get("kolmogorov") and payload.get("kolmogorov"):
            payload["kolmogorov"].setdefault(
                "model_error_parallel", extra["kolmogorov"]["model_error"]
            )
    if merge:
        path = settings.out / "results.json"
        path.write_text(json.dumps(payload, indent=1, default=str))
    records = payload["records"]
    for record in records:  # JSON turned the rank-correlation keys into plain dicts already
        record.setdefault("warnings", [])
    figures = {}
    for record in records:
        key = (record["variant"], record["group"])
        name = f"{key[0]}.png" if key[1] == "D4" else f"{key[0]}_{key[1]}.png"
        if (settings.out / "figures" / name).is_file():
            figures[key] = f"figures/{name}"
    text = write_report(
        records,
        payload["stages"],
        payload["kolmogorov"],
        settings,
        figures,
        payload["total_seconds"],
        payload.get("skipped", []),
    )
    (settings.out / "RESULTS.md").write_text(text)
    return text


def save_figure(summary: Any, title: str, path: Path) -> None:
    """One summary figure (ρ with intervals beside E) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from symcoherence.plotting import summary_figure

    figure = summary_figure(summary, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(figure)


# ---------------------------------------------------------------------------------- main
def _phases(settings: Settings) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """Measurement phases, cheapest and most needed first: (metric, draws, seeds).

    On a CPU the Gauss–Newton cg reference costs minutes per measurement at N = 48 (the orbit
    batch K times more), so the full replication (every seed × draw) runs under ``identity`` and
    ``adam``; ``subspace`` and cg follow on fewer draws and seeds while the time budget lasts,
    and the report lists what was skipped.
    """
    every_seed, every_draw = tuple(range(settings.seeds)), tuple(range(settings.draws))
    if settings.quick:
        return [(metric, every_draw, every_seed) for metric in settings.metrics]
    plan = [
        ("identity", every_draw, every_seed),
        ("adam", every_draw, every_seed),
        ("ekfac_orbit", every_draw, every_seed),
        ("ekfac_probes", every_draw, every_seed),
        ("subspace", (0,), every_seed),
        ("gn_probes", (0,), (0,)),
        ("subspace", every_draw[1:], every_seed),
        ("gn_orbit", (0,), (0,)),
        ("gn_probes", (0,), every_seed[1:]),
        ("gn_orbit", (0,), every_seed[1:]),
        ("gn_probes", every_draw[1:], every_seed),
        ("gn_orbit", every_draw[1:], every_seed),
    ]
    return [(m, d, s) for m, d, s in plan if m in settings.metrics and d and s]


def run(settings: Settings) -> dict[str, Any]:
    """The whole protocol; returns the records (also written to disk after every phase)."""
    import symcoherence as sc

    total_start = time.perf_counter()
    deadline = total_start + settings.budget_minutes * 60
    stages: dict[str, float] = defaultdict(float)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    figures: dict[tuple[str, str], str] = {}
    kolmogorov: dict[str, Any] | None = None
    figure_dir = settings.out / "figures"
    trained: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
    kept = {*REFERENCES, *REFERENCES.values(), "identity"}
    matrices: dict[tuple, torch.Tensor] = {}  # H of the metrics that agreement compares

    # ---- phase 0: train every variant × seed
    for variant in settings.variants:
        for seed in range(settings.seeds):
            log(f"train {variant} seed {seed} ({settings.steps} steps)")
            model, datamodule, optimizer, seconds = train(variant, seed, settings)
            stages[f"train {variant}"] += seconds
            log(f"  trained in {seconds:.1f} s")
            trained[(variant, seed)] = (model, datamodule, optimizer)
            if variant == "kolmogorov":
                start = time.perf_counter()
                if kolmogorov is None:
                    check = solver_defect(datamodule, settings.probes, seed=0)
                    kolmogorov = {
                        "defect": check["defect"],
                        "probes": settings.probes,
                        "model_error": [],
                        "states": (check["x"], check["sx"]),
                    }
                    log(f"  solver defect d(g): {check['defect']}")
                x, sx = kolmogorov["states"]
                kolmogorov["model_error"].append(model_relative_error(model, datamodule, x, sx))
                log(f"  model relative error {kolmogorov['model_error'][-1]:.3g}")
                stages["Kolmogorov solver check"] += time.perf_counter() - start

    def groups_of(datamodule: Any) -> list[tuple[str, Any]]:
        out = [("D4", sc.groups.D4())]
        diagnostic = datamodule.diagnostic_group
        if diagnostic.name != "D4":
            out.append((diagnostic.name, diagnostic))
        return out

    def report() -> dict[str, Any]:
        total = time.perf_counter() - total_start
        public = (
            None if kolmogorov is None else {k: v for k, v in kolmogorov.items() if k != "states"}
        )
        text = write_report(records, dict(stages), public, settings, figures, total, skipped)
        settings.out.mkdir(parents=True, exist_ok=True)
        (settings.out / "RESULTS.md").write_text(text)
        payload = {
            "settings": {k: str(v) for k, v in dataclasses.asdict(settings).items()},
            "stages": dict(stages),
            "total_seconds": total,
            "kolmogorov": public,
            "skipped": skipped,
            "rules": rule_rates(records),
            "records": records,
        }
        (settings.out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
        log(f"wrote {settings.out / 'RESULTS.md'} ({total / 60:.1f} min)")
        return payload

    # ---- measurement phases
    headline = "subspace" if "subspace" in settings.metrics else settings.metrics[0]
    for metric, draws, seeds in _phases(settings):
        log(f"phase {metric}: draws {list(draws)}, seeds {list(seeds)}")
        order = list(settings.variants)
        if metric.startswith("gn_"):  # the group-averaged model costs K forwards per sample
            order.sort(key=lambda v: v == "anisotropic_group_averaged")
        for variant in order:
            for seed in seeds:
                model, datamodule, optimizer = trained[(variant, seed)]
                for draw in draws:
                    for label, group in groups_of(datamodule):
                        what = f"{variant} seed {seed} draw {draw} {label} {metric}"
                        if time.perf_counter() > deadline:
                            skipped.append(what)
                            continue
                        start = time.perf_counter()
                        try:
                            new, summaries, found = measure_model(
                                model,
                                datamodule,
                                optimizer,
                                dataclasses.replace(settings, metrics=(metric,)),
                                variant=variant,
                                seed=seed,
                                draw=draw,
                                group=group,
                                group_label=label,
                            )
                        except ValueError as error:  # a metric that refuses this model (EK-FAC)
                            if metric not in REFERENCES:
                                raise
                            skipped.append(f"{what}: refused ({str(error)[:120]})")
                            log(f"    {what}: refused: {error}")
                            continue
                        records.extend(new)
                        if metric in kept:
                            matrices[(variant, label, seed, draw, metric)] = found[metric]
                        stages[f"measure {metric}"] += time.perf_counter() - start
                        if seed == 0 and draw == 0 and metric == headline:
                            name = f"{variant}.png" if label == "D4" else f"{variant}_{label}.png"
                            save_figure(
                                summaries[metric],
                                f"{variant}, {label}: {METRIC_LABELS[metric]}, standard, "
                                f"N={settings.probes}, seed 0, step {settings.steps}",
                                figure_dir / name,
                            )
                            figures[(variant, label)] = f"figures/{name}"
        attach_agreement(records, matrices)
        payload = report()
    return payload


def parse(argv: list[str] | None = None) -> tuple[Settings, tuple[Path | None, list | None]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy size (seconds)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS)
    parser.add_argument("--metrics", nargs="+", choices=METRICS)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--draws", type=int)
    parser.add_argument("--probes", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--from-json", type=Path, help="only rewrite RESULTS.md from this")
    parser.add_argument("--merge", type=Path, nargs="+", help="with --from-json: add these runs")
    parser.add_argument("--budget-minutes", type=float, help="stop measuring after this")
    parser.add_argument("--out", type=Path, help="folder of RESULTS.md (default experiments/)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "1")))
    args = parser.parse_args(argv)
    settings = Settings()
    if args.quick:
        settings = settings.quick_size()
    overrides = {
        name: value
        for name in ("seeds", "draws", "probes", "steps", "out", "budget_minutes")
        if (value := getattr(args, name)) is not None
    }
    if args.variants:
        overrides["variants"] = tuple(args.variants)
    if args.metrics:
        overrides["metrics"] = tuple(args.metrics)
    torch.set_num_threads(args.threads)
    settings = dataclasses.replace(settings, **overrides)
    return settings, (args.from_json, args.merge)


def main(argv: list[str] | None = None) -> dict[str, Any] | str:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    settings, (from_json, merge) = parse(argv)
    if from_json is not None:
        return report_from_json(from_json, settings, merge)
    return run(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
