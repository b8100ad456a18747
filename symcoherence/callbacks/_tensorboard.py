r"""What only TensorBoard shows of a firing of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`.

Scalars reach every logger through Lightning; this module writes the rest: a figure per firing
(:func:`symcoherence.plotting.summary_figure`), the ``(K, N)`` influence heatmap
(:func:`symcoherence.plotting.heatmap_figure`), histograms of ``I_n(g)``, one custom-scalars layout
(a chart per statistic with a line per element) and the final basin compatibility as an hparams
metric. Tags share the first path segment of the scalars they belong to, so TensorBoard groups
them together: ``{prefix}influence/{group}/figure``, ``…/heatmap``, ``…/{element}`` (histogram).

Example:
    >>> from symcoherence.callbacks._tensorboard import layout_for
    >>> from symcoherence.coherence import Keys
    >>> chart = layout_for(Keys("D4xShifts"), ["e", "r|x1y0"])["coherence/D4xShifts"]
    >>> chart["ratio ρ(g) per element"][1][1]
    '^coherence/D4xShifts/ratio/r\\|x1y0$'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from symcoherence.coherence import Keys, Measurement

_LAYOUT_ATTRIBUTE = "_symcoherence_custom_scalars"
_CHARTS = (
    ("ratio ρ(g) per element", "ratio"),
    ("specific coupling per element", "coupling"),
    ("distribution transfer per element", "transfer"),
    ("influence median per element", "influence"),
    ("equivariance error median per element", "equivariance"),
)


def find_tensorboard_writer(loggers: Sequence[Any]) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoard logger in ``loggers``, else ``None``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_firing(
    writer: Any, keys: Keys, measurement: Measurement, step: int, figures: bool, title: str
) -> None:
    """Write the histograms and (when ``figures``) the figure and heatmap of one firing."""
    from symcoherence.plotting import heatmap_figure, summary_figure

    base = keys.section("influence")
    influence = measurement.influence.influence.detach().double().cpu()
    for element, values in zip(measurement.elements, influence, strict=True):
        finite = values[values.isfinite()]
        if finite.numel():
            writer.add_histogram(f"{base}/{element}", finite, step)
    if not figures:
        return
    writer.add_figure(
        f"{base}/figure", summary_figure(measurement.summary(), title), step, close=True
    )
    writer.add_figure(
        f"{base}/heatmap",
        heatmap_figure(influence, measurement.elements, f"I_n(g) per probe — {title}"),
        step,
        close=True,
    )


def layout_for(keys: Keys, elements: Sequence[str]) -> dict[str, dict[str, list]]:
    """Custom-scalars category for one group: a chart per statistic, a line per element.

    Element names may contain regex metacharacters (``"r|x1y0"``), hence :func:`re.escape`.
    """

    def lines(family: str) -> list[str]:
        pattern = keys.layout_pattern(family)
        return ["^" + re.escape(pattern.format(element=element)) + "$" for element in elements]

    return {
        keys.section("coherence"): {
            title: ["Multiline", lines(family)] for title, family in _CHARTS
        }
    }


def write_layout(writer: Any, keys: Keys, elements: Sequence[str]) -> None:
    """Add this group's category to the writer's single custom-scalars layout and write it.

    Several monitors sharing one writer merge their categories, so the last layout written (the
    one TensorBoard shows) has a chart per group.
    """
    merged: dict[str, dict[str, list]] = getattr(writer, _LAYOUT_ATTRIBUTE, {})
    merged.update(layout_for(keys, elements))
    setattr(writer, _LAYOUT_ATTRIBUTE, merged)
    writer.add_custom_scalars(merged)


def write_hparams(writer: Any, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Write an hparams session whose metrics point at existing scalar tags.

    Writing the summaries directly (rather than ``logger.log_hyperparams(..., metrics=...)``)
    avoids adding a misleading point at step 0 to the metric's scalar series: the hparams
    dashboard reads the last value of each scalar tag named in ``metrics``.
    """
    from torch.utils.tensorboard.summary import hparams

    clean = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in params.items()
    }
    finite = {key: float(value) for key, value in metrics.items() if math.isfinite(value)}
    experiment, start, end = hparams(clean, finite)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
