r"""Figures of a measurement, shared by the TensorBoard logging and ``symcoherence analyze``.

* :func:`summary_figure`: per element, the coherence ratio ``ρ(g)`` with its bootstrap interval
  and the element's random-pair baseline, the specific coupling and the distribution transfer with
  theirs, and the forward equivariance error ``E(g)`` (median with interval, q3 marked), on a
  2 × 2 grid that stays legible at TensorBoard's card width.
* :func:`statistic_figure`: one statistic per element with its interval on one panel, large
  type, titled with the settings and the verdict: what TensorBoard shows per firing, legible at
  its default card width.
* :func:`heatmap_figure`: the per-probe diagonal influence ``I_n(g)`` as an elements × probes
  image with labelled axes and a colour bar centred on 0.

Matplotlib is imported lazily, with the non-interactive Agg backend; callers close the figures.

Example:
    >>> import torch
    >>> from symcoherence.coherence import OrbitInfluence
    >>> from symcoherence.plotting import summary_figure
    >>> h = torch.eye(4).repeat(2, 1, 1) + 0.1 * torch.randn(2, 4, 4)
    >>> result = OrbitInfluence(h, torch.ones(2, 4), torch.ones(4), ("e", "r"), "C2")
    >>> figure = summary_figure(result.summarize(), "C2, identity metric, N = 4")
    >>> len(figure.axes)
    4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from symcoherence.coherence.statistics.summary import Summary


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _interval_panel(
    ax: Any,
    names: Sequence[str],
    values: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    label: str,
    reference: float | None = None,
) -> None:
    positions = list(range(len(names)))
    below = [
        max(v - lo, 0.0) if math.isfinite(lo) else 0.0 for v, lo in zip(values, lows, strict=True)
    ]
    above = [
        max(hi - v, 0.0) if math.isfinite(hi) else 0.0 for v, hi in zip(values, highs, strict=True)
    ]
    ax.errorbar(positions, values, yerr=[below, above], fmt="o", capsize=4, color="C0")
    if reference is not None:
        ax.axhline(reference, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(positions, list(names), rotation=45 if len(names) > 8 else 0)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


_STATISTICS = {
    "transfer": ("transfer", "distribution transfer τ(g)", 1.0),
    "ratio": ("ratio", "the paper's coherence ratio ρ(g)", 1.0),
    "coupling": ("coupling", "specific coupling z(g)", 0.0),
    "equivariance": ("equivariance_median", "forward equivariance error E(g)", 1.0),
}


def statistic_figure(
    summary: Summary, statistic: str, title: str, verdict: str | None = None
) -> Any:
    """One statistic per element with its bootstrap interval, for a TensorBoard card.

    ``ratio`` also marks each element's random-pair baseline (×); ``equivariance`` marks q3 and
    uses a log axis; for the decision rule's statistic the threshold is drawn and flagged
    elements are named in red.

    Args:
        summary: the measurement's summary.
        statistic: ``"transfer"``, ``"ratio"``, ``"coupling"`` or ``"equivariance"``.
        title: metric, normalization, probes and step, in one short line.
        verdict: the verdict in one short line under the title (default: the elements the
            decision rule flags).

    Returns:
        A matplotlib ``Figure``, or ``None`` for ``equivariance`` when it was not measured.

    Raises:
        ValueError: for an unknown statistic.
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; expected one of {list(_STATISTICS)}")
    field, label, reference = _STATISTICS[statistic]
    rows = list(summary)
    prefix = "equivariance" if statistic == "equivariance" else statistic
    values = [getattr(r, field) for r in rows]
    if not any(math.isfinite(v) for v in values):
        return None
    names = [row.element for row in rows]
    # a TensorBoard card shows about 300 px of it: few inches and large type keep it legible
    figure = _figure(5.0, 3.6)
    ax = figure.subplots()
    _interval_panel(
        ax,
        names,
        values,
        [getattr(r, f"{prefix}_lo") for r in rows],
        [getattr(r, f"{prefix}_hi") for r in rows],
        label,
        reference=reference,
    )
    ax.yaxis.label.set_size(13)
    ax.set_ylabel(label.split(" ")[-1])  # the symbol; the title names the statistic
    ax.tick_params(labelsize=13)
    if statistic == "ratio":
        ax.plot(
            range(len(rows)),
            [r.baseline for r in rows],
            "x",
            color="C3",
            ms=9,
            label="random-pair baseline",
        )
        ax.legend(fontsize=10)
    if statistic == "equivariance":
        ax.plot(
            range(len(rows)), [r.equivariance_q3 for r in rows], "_", ms=16, color="C1", label="q3"
        )
        ax.legend(fontsize=10)
        if all(v > 0 for v in values if math.isfinite(v)):
            ax.set_yscale("log")
    rule = summary.rule
    if rule.statistic == statistic and rule.threshold != "baseline":
        ax.axhline(
            float(rule.threshold),
            color="C3",
            lw=1.2,
            ls="--",
            label=f"rule: interval below {float(rule.threshold):g}",
        )
        ax.legend(fontsize=10)
    flagged = {name for name, value in summary.suppressed.items() if value}
    for tick in ax.get_xticklabels():
        if tick.get_text() in flagged:
            tick.set_color("C3")
            tick.set_fontweight("bold")
    level = f"{round(100 * summary.confidence)} % interval"
    if verdict is None:
        verdict = f"flagged: {', '.join(sorted(flagged))}" if flagged else "no element flagged"
    ax.set_title(f"{label}, {level}\n{title}\n{verdict}", fontsize=12, loc="left")
    return figure


def summary_figure(summary: Summary, title: str) -> Any:
    """Per-element statistics with their intervals, on a 2 × 2 grid (see the module docstring).

    Panels: coherence ratio ``ρ(g)`` with the element's random-pair baseline (×), specific
    coupling, distribution transfer, and the forward equivariance error (median with interval, q3
    as a bar; left empty when not measured). Elements the decision rule flags are named in red.

    Args:
        summary: the measurement's summary.
        title: the figure title; state the metric, normalization, probes and checkpoint or step.

    Returns:
        A matplotlib ``Figure``.
    """
    rows = list(summary)
    names = [row.element for row in rows]
    figure = _figure(9.0, 6.4)
    (ratio_ax, coupling_ax), (transfer_ax, error_ax) = figure.subplots(2, 2, sharex=True)
    panels = (
        (ratio_ax, "ratio", "coherence ratio ρ(g)", 1.0),
        (coupling_ax, "coupling", "specific coupling z(g)", 0.0),
        (transfer_ax, "transfer", "distribution transfer τ(g)", 1.0),
    )
    for ax, statistic, label, reference in panels:
        _interval_panel(
            ax,
            names,
            [getattr(r, statistic) for r in rows],
            [getattr(r, f"{statistic}_lo") for r in rows],
            [getattr(r, f"{statistic}_hi") for r in rows],
            label,
            reference=reference,
        )
    ratio_ax.plot(range(len(rows)), [r.baseline for r in rows], "x", color="C3", label="baseline")
    level = f"{round(100 * summary.confidence)} % interval"
    ratio_ax.legend(fontsize=8, loc="best", title=level, title_fontsize=8)
    if any(math.isfinite(row.equivariance_median) for row in rows):
        _interval_panel(
            error_ax,
            names,
            [r.equivariance_median for r in rows],
            [r.equivariance_lo for r in rows],
            [r.equivariance_hi for r in rows],
            "equivariance error E(g)",
            reference=1.0,
        )
        error_ax.plot(range(len(rows)), [r.equivariance_q3 for r in rows], "_", ms=14, color="C1")
        if all(r.equivariance_median > 0 for r in rows):
            error_ax.set_yscale("log")
    else:
        error_ax.set_axis_off()
    flagged = {name for name, value in summary.suppressed.items() if value}
    for ax in (transfer_ax, error_ax):
        for label in ax.get_xticklabels():
            if label.get_text() in flagged:
                label.set_color("C3")
    verdict = summary.verdict().split("; ")[0]
    figure.suptitle(f"{title}\n{verdict}", fontsize=11, wrap=True)
    return figure


def heatmap_figure(influence: torch.Tensor, elements: Sequence[str], title: str) -> Any:
    """``I_n(g)`` ``(K, N)`` as an image: rows are elements, columns probes, colour bar at 0.

    NaN entries (degenerate probes) are drawn grey.
    """
    from matplotlib import colormaps

    values = influence.detach().double().cpu()
    finite = values[torch.isfinite(values)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    figure = _figure(max(5.0, 0.12 * values.shape[1] + 2.0), 0.35 * len(elements) + 1.8)
    ax = figure.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.7")
    image = ax.imshow(
        values.numpy(), cmap=cmap, vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest"
    )
    ax.set_yticks(range(len(elements)), list(elements))
    ax.tick_params(labelsize=12)
    ax.set_xlabel("probe n", fontsize=12)
    ax.set_ylabel("element g", fontsize=12)
    figure.colorbar(image, ax=ax, label="influence $I_n(g)$")
    ax.set_title(title, fontsize=12, loc="left")
    return figure


__all__ = ["heatmap_figure", "statistic_figure", "summary_figure"]
