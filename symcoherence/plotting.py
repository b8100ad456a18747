r"""Figures of a measurement, shared by the TensorBoard logging and ``symcoherence analyze``.

* :func:`summary_figure`: per element, the coherence ratio ``ρ(g)`` with its bootstrap interval
  and the element's random-pair baseline, the specific coupling and the distribution transfer with
  theirs, and the forward equivariance error ``E(g)`` (median with interval, q3 marked).
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
    3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from symcoherence.coherence.summary import Summary


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


def summary_figure(summary: Summary, title: str) -> Any:
    """Per-element statistics with their intervals (see the module docstring).

    Args:
        summary: the measurement's summary.
        title: the figure title; state the metric, normalization, probes and checkpoint or step.

    Returns:
        A matplotlib ``Figure``.
    """
    rows = list(summary)
    names = [row.element for row in rows]
    has_error = any(math.isfinite(row.equivariance_median) for row in rows)
    figure = _figure(4.2 * (3 if has_error else 2), 3.6)
    axes = figure.subplots(1, 3 if has_error else 2)
    level = f"{round(100 * summary.confidence)} % interval"
    _interval_panel(
        axes[0],
        names,
        [r.ratio for r in rows],
        [r.ratio_lo for r in rows],
        [r.ratio_hi for r in rows],
        "coherence ratio ρ(g)",
        reference=1.0,
    )
    axes[0].plot(range(len(rows)), [r.baseline for r in rows], "x", color="C3", label="baseline")
    axes[0].legend(fontsize=8, loc="best", title=level, title_fontsize=8)
    _interval_panel(
        axes[1],
        names,
        [r.coupling for r in rows],
        [r.coupling_lo for r in rows],
        [r.coupling_hi for r in rows],
        "specific coupling z(g)",
        reference=0.0,
    )
    if has_error:
        _interval_panel(
            axes[2],
            names,
            [r.equivariance_median for r in rows],
            [r.equivariance_lo for r in rows],
            [r.equivariance_hi for r in rows],
            "equivariance error E(g)",
            reference=1.0,
        )
        axes[2].plot(range(len(rows)), [r.equivariance_q3 for r in rows], "_", ms=12, color="C1")
        if all(r.equivariance_median > 0 for r in rows):
            axes[2].set_yscale("log")
    figure.suptitle(title, fontsize=10)
    return figure


def heatmap_figure(influence: torch.Tensor, elements: Sequence[str], title: str) -> Any:
    """``I_n(g)`` ``(K, N)`` as an image: rows are elements, columns probes, colour bar at 0.

    NaN entries (degenerate probes) are drawn grey.
    """
    from matplotlib import colormaps

    values = influence.detach().double().cpu()
    finite = values[torch.isfinite(values)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    figure = _figure(max(4.0, 0.12 * values.shape[1] + 2.0), 0.35 * len(elements) + 1.4)
    ax = figure.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.7")
    image = ax.imshow(
        values.numpy(), cmap=cmap, vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest"
    )
    ax.set_yticks(range(len(elements)), list(elements))
    ax.set_xlabel("probe n")
    ax.set_ylabel("element g")
    figure.colorbar(image, ax=ax, label="influence $I_n(g)$")
    ax.set_title(title, fontsize=10)
    return figure


__all__ = ["heatmap_figure", "summary_figure"]
