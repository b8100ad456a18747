"""Lead time: does the verdict name, from the first training step, the symmetries training will not learn?

Protocol (one command; writes the "Lead time" section of ``experiments/RESULTS.md``,
``experiments/lead_time.json`` and one figure per variant under ``experiments/figures/``):

* the variants of the controlled experiment (``configs/experiment/``, 16² grid, 400 AdamW steps),
  each for every training seed, trained with the ``symcoherence`` LightningCLI;
* during training, on a fixed schedule that starts before the first optimizer step and is
  log-spaced to the end (0, 1, 2, 4, 8, 16, 40, 100, 200, 400), every probe draw (N probes from
  distinct trajectories) is measured under every metric with the monitor's measurement
  (:func:`symcoherence.cli.analyze.analyze`); the Adam metric has no geometry before the first
  step (the optimizer holds no second moments), so its schedule starts at step 1;
* the augmented variant is measured twice: on validation probes (untransformed) and on probes drawn
  as training sees them, through the datamodule's D4 augmentation (``probe_split="train"``);
* **ground truth, fixed before the run**: an element *fails* when, at the end of training, the
  median over probe draws of the lower bound of its forward error's 90 % interval exceeds
  ``FAIL_THRESHOLD`` = 1.5 (loss at g·x at least 1.5 times the loss at x). The Kolmogorov model's
  inadmissible elements (E > 1 is correct there) are reported apart;
* **predictors at each step s**: the verdict (default decision rule: the distribution transfer's
  interval below 0.5) and a forward-error rule on E at the same step (interval lower bound above
  ``FAIL_THRESHOLD``);
* reported per variant and metric: precision and recall of each predictor at step 0, 1 % and 10 %
  of training; the lead time (first step from which the verdict's flag holds to the end, minus
  the same for the E rule) over the failing elements; the null false-positive rate at every
  step (isotropic data and the group-averaged model); the step-0 verdict per seed with the
  model's output scale at initialization, and under a rescaled output layer (×0.1, ×10).

    python experiments/lead_time.py            # full protocol (about 1.5 h on 2 CPU cores)
    python experiments/lead_time.py --quick    # toy size, seconds (the test suite)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controlled_experiment  # noqa: E402  (the protocol's shared parts)
from controlled_experiment import (  # noqa: E402
    FAILING,
    KOLMOGOROV_ADMISSIBLE,
    NULL_VARIANTS,
    VARIANTS,
    log,
    training_args,
)

FAIL_THRESHOLD = 1.5
SCHEDULE = (0, 1, 2, 4, 8, 16, 40, 100, 200, 400)
METRICS = ("identity", "adam")
OUTPUT_SCALES = (0.1, 10.0)  # step-0 verdict under a rescaled output layer
SECTION = ("<!-- lead-time:start -->", "<!-- lead-time:end -->")


@dataclass(frozen=True)
class Settings(controlled_experiment.Settings):
    """Size of one run: the controlled experiment's, with the schedule and the affordable metrics."""

    metrics: tuple[str, ...] = METRICS
    schedule: tuple[int, ...] = SCHEDULE

    def quick_size(self) -> Settings:
        """Toy size for the test suite: 8² grid, 1 seed × 1 draw, 8 probes, 6 steps."""
        return dataclasses.replace(
            super().quick_size(),
            variants=("isotropic", "anisotropic", "anisotropic_augmented"),
            metrics=METRICS,
            schedule=(0, 1, 6),
        )


def probe_choices(variant: str) -> tuple[str, ...]:
    """Where the probes come from: validation always; the augmented variant also training."""
    return ("val", "train") if variant == "anisotropic_augmented" else ("val",)


# ---------------------------------------------------------------------------------- measuring
def measure_once(module, datamodule, optimizer, settings, *, metric, split, draw, group):
    """One measurement with the monitor's path; per element: flag, τ interval, E interval."""
    from symcoherence.cli.analyze import analyze
    from symcoherence.coherence import MeasurementSpec

    spec = MeasurementSpec(group=group, metric=metric, resamples=settings.resamples, seed=draw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measurement = analyze(
            module,
            datamodule,
            spec,
            probe_size=settings.probes,
            probe_split=split,
            probe_seed=1000 + draw,
            optimizer=optimizer if metric == "adam" else None,
        )
    summary = measurement.summary()
    flags = summary.suppressed
    return {
        row.element: {
            "flag": bool(flags.get(row.element)),
            "transfer": row.transfer,
            "transfer_lo": row.transfer_lo,
            "transfer_hi": row.transfer_hi,
            "E": row.equivariance_median,
            "E_lo": row.equivariance_lo,
            "E_hi": row.equivariance_hi,
        }
        for row in summary
        if row.element != summary.identity
    }


def output_scale(module, datamodule, settings) -> float:
    """RMS of the initialized model's prediction ÷ RMS of the target, on the first probe draw."""
    x, y = datamodule.probe_batch(settings.probes, split="val", seed=1000)
    with torch.no_grad():
        prediction = module.backbone(x)
    return float(prediction.pow(2).mean().sqrt() / y.pow(2).mean().sqrt())


class Scheduled(Callback):
    """Measures every (metric, probe choice, draw) at the schedule's steps, during training.

    Step 0 is measured in ``on_train_start`` (before the first optimizer step), every later
    step after the optimizer step that makes ``trainer.global_step`` equal to it.
    """

    def __init__(self, variant: str, seed: int, settings: Settings, records: list, seconds: dict):
        self.variant, self.seed, self.settings = variant, seed, settings
        self.records, self.seconds, self.done = records, seconds, set()

    def fire(self, trainer: Any, module: Any) -> None:
        step = trainer.global_step
        if step in self.done or step not in self.settings.schedule:
            return
        self.done.add(step)
        start = time.perf_counter()
        for metric in self.settings.metrics:
            if metric == "adam" and step == 0:
                continue  # no second moments before the first optimizer step
            for split in probe_choices(self.variant):
                for draw in range(self.settings.draws):
                    elements = measure_once(
                        module,
                        trainer.datamodule,
                        trainer.optimizers[0],
                        self.settings,
                        metric=metric,
                        split=split,
                        draw=draw,
                        group="D4",
                    )
                    self.records.append(
                        {
                            "variant": self.variant,
                            "seed": self.seed,
                            "metric": metric,
                            "probes": split,
                            "draw": draw,
                            "step": step,
                            "elements": elements,
                        }
                    )
        self.seconds["measure"] += time.perf_counter() - start
        log(f"    {self.variant} seed {self.seed} step {step}: {time.perf_counter() - start:.1f} s")

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.fire(trainer, module)

    def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        self.fire(trainer, module)


def train_and_measure(variant, seed, settings, records, seconds, init_records) -> None:
    """Fit one variant for one seed with the scheduled measurements; the step-0 scale checks."""
    from symcoherence.cli.lightning import lightning_cli

    start = time.perf_counter()
    cli = lightning_cli(training_args(variant, seed, settings)[1:], run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    init_records.append(
        {
            "variant": variant,
            "seed": seed,
            "output_scale": output_scale(cli.model, cli.datamodule, settings),
        }
    )
    if variant == "anisotropic":
        init_records[-1]["rescaled"] = rescaled_verdicts(cli.model, cli.datamodule, settings)
    cli.trainer.callbacks.append(Scheduled(variant, seed, settings, records, seconds))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds["train and measure"] += time.perf_counter() - start


def last_layer(backbone: torch.nn.Module) -> torch.nn.Module:
    """The last module with a weight (the output layer)."""
    return [m for m in backbone.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)][
        -1
    ]


def rescaled_verdicts(module, datamodule, settings) -> dict[str, list[str]]:
    """Step-0 flags (identity, draw 0) with the output layer's weights scaled by each factor."""
    layer, out = last_layer(module.backbone), {}
    original = layer.weight.detach().clone()
    for factor in OUTPUT_SCALES:
        with torch.no_grad():
            layer.weight.copy_(original * factor)
        elements = measure_once(
            module, datamodule, None, settings, metric="identity", split="val", draw=0, group="D4"
        )
        out[str(factor)] = sorted(g for g, e in elements.items() if e["flag"])
    with torch.no_grad():
        layer.weight.copy_(original)
    return out


# ---------------------------------------------------------------------------------- analysis
def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def ground_truth(records: list[dict], final: int) -> dict[tuple[str, int], set[str]]:
    """``{(variant, seed): failing elements}``: median over draws of E's lower bound > 1.5 at the end."""
    lows: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for r in records:
        if r["step"] == final and r["metric"] == "identity" and r["probes"] == "val":
            for element, e in r["elements"].items():
                lows[(r["variant"], r["seed"], element)].append(e["E_lo"])
    truth: dict[tuple[str, int], set[str]] = defaultdict(set)
    for (variant, seed, element), values in lows.items():
        truth[(variant, seed)]  # every measured run has an entry, failing or not
        if _median(values) > FAIL_THRESHOLD:
            truth[(variant, seed)].add(element)
    return truth


def predictions(record: dict) -> dict[str, dict[str, bool]]:
    """Per predictor, per element: the verdict's flag and the E rule at the record's step."""
    return {
        "verdict": {g: e["flag"] for g, e in record["elements"].items()},
        "E rule": {g: e["E_lo"] > FAIL_THRESHOLD for g, e in record["elements"].items()},
    }


def cells(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Records grouped by (variant, probe choice, metric)."""
    out: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        out[(r["variant"], r["probes"], r["metric"])].append(r)
    return out


def precision_recall(
    rows: list[dict], truth, step: int, predictor: str
) -> tuple[int, int, int, int]:
    """``(true positives, flagged, failing, measured)`` over seeds × draws × elements at ``step``."""
    hits = flagged = failing = measured = 0
    for r in rows:
        if r["step"] != step:
            continue
        fails = truth.get((r["variant"], r["seed"]), set())
        for element, flag in predictions(r)[predictor].items():
            hits += flag and element in fails
            flagged += flag
            failing += element in fails
            measured += 1
    return hits, flagged, failing, measured


def stable_step(rows: list[dict], predictor: str, element: str) -> int | None:
    """The first scheduled step from which ``predictor`` flags ``element`` at every later step."""
    flags = sorted((r["step"], predictions(r)[predictor][element]) for r in rows)
    first = None
    for step, flag in flags:
        if flag and first is None:
            first = step
        elif not flag:
            first = None
    return first


def first_step(rows: list[dict], predictor: str, element: str) -> int | None:
    """The first scheduled step at which ``predictor`` flags ``element`` (held or not)."""
    flagged = sorted(r["step"] for r in rows if predictions(r)[predictor][element])
    return flagged[0] if flagged else None


def first_flag_leads(rows: list[dict], truth) -> list[int]:
    """E rule's first flag − the verdict's, over failing cases that both flag at some step."""
    by_run: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for r in rows:
        by_run[(r["seed"], r["draw"])].append(r)
    leads = []
    for (seed, _), run_rows in by_run.items():
        for element in sorted(truth.get((run_rows[0]["variant"], seed), set())):
            verdict = first_step(run_rows, "verdict", element)
            error = first_step(run_rows, "E rule", element)
            if verdict is not None and error is not None:
                leads.append(error - verdict)
    return leads


def lead_times(rows: list[dict], truth) -> tuple[list[int], int, int]:
    """Lead times (E rule's stable step − the verdict's) over failing (seed, draw, element)s.

    Also counts the failing cases the verdict never flagged stably and those only it flagged.
    """
    by_run: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for r in rows:
        by_run[(r["seed"], r["draw"])].append(r)
    leads, missed, only_verdict = [], 0, 0
    for (seed, _), run_rows in by_run.items():
        for element in sorted(truth.get((run_rows[0]["variant"], seed), set())):
            verdict = stable_step(run_rows, "verdict", element)
            error = stable_step(run_rows, "E rule", element)
            if verdict is None:
                missed += 1
            elif error is None:
                only_verdict += 1
            else:
                leads.append(error - verdict)
    return leads, missed, only_verdict


def _rate(hits: int, total: int) -> str:
    return f"{hits}/{total} = {hits / total:.2f}" if total else "—"


def report_section(payload: dict) -> str:
    """The "Lead time" section of RESULTS.md, from the run's records."""
    settings, records = payload["settings"], payload["records"]
    steps = sorted({r["step"] for r in records})
    final = max(steps)
    truth = ground_truth(records, final)
    marks = {"0": 0, "1 %": max(1, round(0.01 * final)), "10 %": round(0.1 * final)}
    marks = {
        label: min((s for s in steps if s >= step), default=final) for label, step in marks.items()
    }
    lines = [
        SECTION[0],
        "## Lead time: the verdict during training",
        "",
        f"Produced by `python experiments/lead_time.py{' --quick' if settings['quick'] else ''}` in "
        f"{payload['total_seconds'] / 60:.1f} min of wall time on this machine "
        f"({os.cpu_count()} CPU cores; training and measuring "
        f"{payload['seconds'].get('train and measure', 0) / 60:.1f} min, of which measuring "
        f"{payload['seconds'].get('measure', 0) / 60:.1f} min). Variants: "
        f"{', '.join(settings['variants'])}; {settings['seeds']} seeds × {settings['draws']} probe "
        f"draws × N = {settings['probes']}, {final} steps; measured at steps {steps} under "
        f"{', '.join(settings['metrics'])} (adam from step 1: no second moments before the "
        "first step).",
        "",
        f"Ground truth, fixed before the run: an element *fails* when at step {final} the median "
        f"over probe draws of the lower bound of its forward error's 90 % interval exceeds "
        f"{FAIL_THRESHOLD}. Predictors at each step: the **verdict** (the default decision rule: "
        f"the distribution transfer's interval below 0.5) and the **E rule** (E's lower bound "
        f"above {FAIL_THRESHOLD} at that step). Failing elements found: "
        + "; ".join(
            f"{v} seed {s}: {', '.join(sorted(f)) or 'none'}"
            for (v, s), f in sorted(truth.items())
            if v != "kolmogorov"
        )
        + ".",
        "",
        "### Precision and recall",
        "",
        "Precision = flagged elements that fail / flagged; recall = failing elements flagged / "
        "failing; over seeds × draws × the elements g ≠ e. Kolmogorov is reported apart (below).",
        "",
        "| variant | probes | metric | predictor | "
        + " | ".join(f"precision, step {s} ({m})" for m, s in marks.items())
        + " | "
        + " | ".join(f"recall, step {s} ({m})" for m, s in marks.items())
        + " | "
        + " | ".join(f"flagged / measured, step {s}" for s in marks.values())
        + " |",
        "|---|---|---|---|" + "---:|" * (3 * len(marks)),
    ]
    grouped = cells(records)
    for (variant, probes, metric), rows in sorted(grouped.items()):
        if variant == "kolmogorov":
            continue
        for predictor in ("verdict", "E rule"):
            counts = [precision_recall(rows, truth, s, predictor) for s in marks.values()]
            lines.append(
                f"| {variant} | {probes} | {metric} | {predictor} | "
                + " | ".join(_rate(h, f) for h, f, _, _ in counts)
                + " | "
                + " | ".join(_rate(h, n) for h, _, n, _ in counts)
                + " | "
                + " | ".join(_rate(f, m) for _, f, _, m in counts)
                + " |"
            )
    lines += [
        "",
        "### Lead time over the failing elements",
        "",
        "Lead = first step from which the E rule flags the element at every later scheduled step, "
        "minus the same for the verdict: positive when the verdict comes first (in training "
        "steps). The first-flag lead compares the first steps at which each predictor flags the "
        "element at all, held or not.",
        "",
        "| variant | probes | metric | failing cases | lead median (min…max) | verdict first / same / later | verdict never stable | only the verdict flags | first-flag lead median (min…max), cases |",
        "|---|---|---|---:|---|---|---:|---:|---|",
    ]
    for (variant, probes, metric), rows in sorted(grouped.items()):
        if variant in NULL_VARIANTS or variant == "kolmogorov":
            continue
        leads, missed, only = lead_times(rows, truth)
        total = len(leads) + missed + only
        if not total:
            continue
        spread = f"{statistics.median(leads):g} ({min(leads)}…{max(leads)})" if leads else "—"
        order = f"{sum(v > 0 for v in leads)} / {sum(v == 0 for v in leads)} / {sum(v < 0 for v in leads)}"
        first = first_flag_leads(rows, truth)
        early = (
            f"{statistics.median(first):g} ({min(first)}…{max(first)}), {len(first)}"
            if first
            else "—"
        )
        lines.append(
            f"| {variant} | {probes} | {metric} | {total} | {spread} | {order} | {missed} | {only} "
            f"| {early} |"
        )
    lines += [
        "",
        "### False-positive rate on the nulls at every step",
        "",
        "Flagged / measured elements g ≠ e of the isotropic data and the group-averaged model "
        "(no element fails there), over seeds × draws.",
        "",
        "| metric | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for metric in settings["metrics"]:
        row = []
        for step in steps:
            flags = [
                flag
                for r in records
                if r["variant"] in NULL_VARIANTS and r["metric"] == metric and r["step"] == step
                for flag in predictions(r)["verdict"].values()
            ]
            row.append(_rate(sum(flags), len(flags)))
        lines.append(f"| {metric} | " + " | ".join(row) + " |")
    kolmogorov = [r for r in records if r["variant"] == "kolmogorov"]
    if kolmogorov:
        lines += [
            "",
            "### Kolmogorov flow (forced): inadmissible vs admissible elements",
            "",
            "The forcing leaves only e and sr2 of D4; on the six others E > 1 is correct. Verdict "
            "flags / measured, over seeds × draws.",
            "",
            "| metric | elements | " + " | ".join(f"step {s}" for s in steps) + " |",
            "|---|---|" + "---:|" * len(steps),
        ]
        for metric in settings["metrics"]:
            for label, admissible in (("inadmissible", False), ("sr2", True)):
                row = []
                for step in steps:
                    flags = [
                        e["flag"]
                        for r in kolmogorov
                        if r["metric"] == metric and r["step"] == step
                        for g, e in r["elements"].items()
                        if (g in KOLMOGOROV_ADMISSIBLE) == admissible
                    ]
                    row.append(_rate(sum(flags), len(flags)))
                lines.append(f"| {metric} | {label} | " + " | ".join(row) + " |")
    lines += [
        "",
        "### The step-0 verdict and the initialization",
        "",
        "Per anisotropic seed: the initialized model's output scale (RMS of f(x) ÷ RMS of y), the "
        f"elements flagged at step 0 (identity, validation probes, every draw), and those flagged "
        f"with the output layer's weights scaled by {' and '.join(f'×{f:g}' for f in OUTPUT_SCALES)} "
        f"(draw 0). The elements that fail at the end are {', '.join(FAILING)} by construction of "
        "the data.",
        "",
        "| variant | seed | output scale | flagged at step 0 | "
        + " | ".join(f"×{f:g}" for f in OUTPUT_SCALES)
        + " |",
        "|---|---:|---:|---|" + "---|" * len(OUTPUT_SCALES),
    ]
    for init in payload["init"]:
        if init["variant"] not in ("anisotropic", "isotropic"):
            continue
        step0 = sorted(
            {
                g
                for r in records
                if r["variant"] == init["variant"]
                and r["seed"] == init["seed"]
                and r["step"] == 0
                and r["metric"] == "identity"
                and r["probes"] == "val"
                for g, e in r["elements"].items()
                if e["flag"]
            }
        )
        rescaled = init.get("rescaled", {})
        lines.append(
            f"| {init['variant']} | {init['seed']} | {init['output_scale']:.3g} | "
            f"{', '.join(step0) or 'none'} | "
            + " | ".join(
                ", ".join(rescaled.get(str(f), [])) or ("none" if rescaled else "—")
                for f in OUTPUT_SCALES
            )
            + " |"
        )
    figures = payload.get("figures", {})
    if figures:
        lines += ["", "### Figures", ""]
        lines += [f"![{variant}]({path})" for variant, path in sorted(figures.items())]
    lines.append(SECTION[1])
    return "\n".join(lines) + "\n"


def save_figure(records: list[dict], variant: str, probes: int, path: Path) -> None:
    """τ(g) with its interval over the schedule beside E(g): seed 0, draw 0, identity, validation."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(
        (
            r
            for r in records
            if r["variant"] == variant
            and r["seed"] == 0
            and r["draw"] == 0
            and r["metric"] == "identity"
            and r["probes"] == "val"
        ),
        key=lambda r: r["step"],
    )
    if not rows:
        return
    steps = [max(r["step"], 0.5) for r in rows]  # step 0 drawn at 0.5 on the log axis
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for element in rows[0]["elements"]:
        series = [r["elements"][element] for r in rows]
        line = left.plot(steps, [e["transfer"] for e in series], marker="o", label=element)[0]
        left.fill_between(
            steps,
            [e["transfer_lo"] for e in series],
            [e["transfer_hi"] for e in series],
            color=line.get_color(),
            alpha=0.15,
        )
        right.plot(
            steps, [e["E"] for e in series], marker="o", color=line.get_color(), label=element
        )
        right.fill_between(
            steps,
            [e["E_lo"] for e in series],
            [e["E_hi"] for e in series],
            color=line.get_color(),
            alpha=0.15,
        )
    left.axhline(0.5, color="black", lw=1, ls="--", label="rule: interval below 0.5")
    right.axhline(FAIL_THRESHOLD, color="black", lw=1, ls="--", label=f"E = {FAIL_THRESHOLD}")
    for axis, label in (
        (left, "distribution transfer τ(g), 90 % interval"),
        (right, "forward error E(g), 90 % interval"),
    ):
        axis.set_xscale("log")
        axis.set_xticks(steps, [str(r["step"]) for r in rows])
        axis.minorticks_off()
        axis.set_xlabel("training step (log scale)", fontsize=12)
        axis.set_title(label, fontsize=13)
        axis.tick_params(labelsize=11)
    right.set_yscale("log")
    right.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.legend(fontsize=9, ncol=2)
    figure.suptitle(
        f"{variant}: identity metric, validation probes, N = {probes}, seed 0, draw 0",
        fontsize=13,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_section(results: Path, section: str) -> None:
    """Put ``section`` between its markers in RESULTS.md (appended when the markers are absent)."""
    text = results.read_text() if results.exists() else ""
    if SECTION[0] in text and SECTION[1] in text:
        head, rest = text.split(SECTION[0], 1)
        tail = rest.split(SECTION[1], 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    results.write_text(text)


# ---------------------------------------------------------------------------------- main
def run(settings: Settings) -> dict[str, Any]:
    """The whole protocol; the report is rewritten after every trained run."""
    start = time.perf_counter()
    records: list[dict] = []
    init: list[dict] = []
    seconds: dict[str, float] = defaultdict(float)
    payload: dict[str, Any] = {}
    for variant in settings.variants:
        for seed in range(settings.seeds):
            log(
                f"{variant} seed {seed}: train {settings.steps} steps, measure at {settings.schedule}"
            )
            train_and_measure(variant, seed, settings, records, seconds, init)
            figures = {}
            for name in {r["variant"] for r in records}:
                path = settings.out / "figures" / f"lead_time_{name}.png"
                save_figure(records, name, settings.probes, path)
                figures[name] = f"figures/{path.name}"
            payload = {
                "settings": {
                    k: v
                    for k, v in dataclasses.asdict(settings).items()
                    if k not in ("out", "cache_dir", "budget_minutes")
                },
                "seconds": dict(seconds),
                "total_seconds": time.perf_counter() - start,
                "init": init,
                "figures": figures,
                "records": records,
            }
            settings.out.mkdir(parents=True, exist_ok=True)
            (settings.out / "lead_time.json").write_text(json.dumps(payload, indent=1, default=str))
            write_section(settings.out / "RESULTS.md", report_section(payload))
    log(f"wrote {settings.out / 'RESULTS.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
    return payload


def parse(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy size (seconds)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS)
    parser.add_argument("--metrics", nargs="+", choices=METRICS)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--draws", type=int)
    parser.add_argument("--probes", type=int)
    parser.add_argument("--out", type=Path, help="folder of RESULTS.md (default experiments/)")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = parser.parse_args(argv)
    settings = Settings().quick_size() if args.quick else Settings()
    overrides = {
        name: value
        for name in ("seeds", "draws", "probes", "out", "cache_dir")
        if (value := getattr(args, name)) is not None
    }
    for name in ("variants", "metrics"):
        if getattr(args, name):
            overrides[name] = tuple(getattr(args, name))
    torch.set_num_threads(args.threads)
    return dataclasses.replace(settings, **overrides)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return run(parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
