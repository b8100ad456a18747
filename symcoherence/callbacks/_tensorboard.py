r"""What :class:`~symcoherence.callbacks.OrbitCoherenceMonitor` logs for one firing.

The scalars of a firing (:func:`firing_scalars`) reach every logger through Lightning; this module
also writes what only TensorBoard shows: a figure per firing (influence per element beside the forward equivariance error per element), the
``(K, N)`` influence heatmap, histograms of ``I_n(g)``, one custom-scalars layout (a chart per group
with a line per element) and the final basin compatibility as an hparams metric. Matplotlib is
imported lazily with the non-interactive Agg backend.

Tags follow DESIGN §3.3, so TensorBoard groups them with the scalars of the same family:
``{prefix}influence/{group}/figure``, ``{prefix}influence/{group}/heatmap``,
``{prefix}influence/{group}/{element}`` (histogram).

Example:
    >>> from symcoherence.callbacks._tensorboard import layout_for
    >>> chart = layout_for("", "D4xShifts", ["e", "r|x1y0"])["coherence/D4xShifts"]
    >>> chart["ratio per element"][1][1]
    '^coherence/D4xShifts/ratio/r\\|x1y0$'
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from symcoherence.callbacks._firing import Part
from symcoherence.coherence.summary import quantiles

log = logging.getLogger(__name__)

_LAYOUT_ATTRIBUTE = "_symcoherence_custom_scalars"


def firing_scalars(result: Part, prefix: str, group: str, rollout_steps: int) -> dict[str, float]:
    """The finite scalars of one firing, under DESIGN §3.3 keys.

    The summary of :meth:`~symcoherence.coherence.OrbitInfluence.summary` (with the forward
    equivariance errors when measured), plus median and q3 of the rollout equivariance error per
    element as ``{prefix}equivariance/{group}/rollout{steps}/{element}/median`` (and ``/q3``).
    Undefined (non-finite) statistics are left out.
    """
    assert result.influence is not None
    scalars = result.influence.summary(prefix=prefix, equivariance=result.equivariance)
    if result.rollout is not None:
        stats = quantiles(result.rollout, [0.5, 0.75])
        base = f"{prefix}equivariance/{group}/rollout{rollout_steps}"
        for k, element in enumerate(result.influence.elements):
            scalars[f"{base}/{element}/median"] = float(stats[0, k])
            scalars[f"{base}/{element}/q3"] = float(stats[1, k])
    dropped = [key for key, value in scalars.items() if not math.isfinite(value)]
    if dropped:
        log.info("not logging undefined (non-finite) statistics %s", dropped)
    return {key: value for key, value in scalars.items() if math.isfinite(value)}


def find_tensorboard_writer(loggers: Sequence[Any]) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoard logger in ``loggers``, else ``None``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def summary_figure(
    elements: Sequence[str],
    influence: torch.Tensor,
    equivariance: torch.Tensor | None,
    title: str,
) -> Any:
    """Median and quartiles of ``I_n(g)`` per element, beside ``E_n(g)`` per element.

    Args:
        elements: the ``K`` element names.
        influence: ``(K, N)`` normalized diagonal influence ``I_n(g)``.
        equivariance: ``(K, N)`` forward equivariance errors ``E_n(g)``, or ``None``.
        title: figure title.

    Returns:
        A matplotlib ``Figure`` (the caller closes it).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    columns = 1 if equivariance is None else 2
    figure = Figure(figsize=(4.5 * columns, 3.2), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    positions = list(range(len(elements)))
    panels = [(axes[0], influence, "influence $I_n(g)$", False)]
    if equivariance is not None:
        panels.append((axes[1], equivariance, "equivariance error $E_n(g)$", True))
    for ax, values, label, log_scale in panels:
        q1, median, q3 = quantiles(values.detach().cpu(), [0.25, 0.5, 0.75])
        ax.errorbar(
            positions,
            median.numpy(),
            yerr=torch.stack([median - q1, q3 - median]).clamp_min(0).numpy(),
            fmt="o",
            capsize=3,
        )
        ax.set_xticks(positions, list(elements), rotation=45 if len(elements) > 8 else 0)
        ax.set_ylabel(label)
        if log_scale and bool((q1 > 0).all()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def heatmap_image(values: torch.Tensor, pixels_per_row: int = 4) -> torch.Tensor:
    """``(K, N)`` values as a ``(3, K·pixels_per_row, N)`` RGB image on a symmetric colour scale.

    Rows are elements, columns probe samples; the ``RdBu`` colour map is centred on 0.
    """
    from matplotlib import colormaps

    values = values.detach().double().cpu()
    scale = float(values.abs().max())
    scaled = 0.5 + 0.5 * values / (scale if scale > 0 else 1.0)
    rgba = torch.from_numpy(colormaps["RdBu_r"](scaled.numpy()))  # (K, N, 4)
    image = rgba[..., :3].permute(2, 0, 1).float()
    return image.repeat_interleave(pixels_per_row, dim=1)


def log_firing(
    writer: Any,
    prefix: str,
    group: str,
    elements: Sequence[str],
    influence: torch.Tensor,
    equivariance: torch.Tensor | None,
    step: int,
    figures: bool,
) -> None:
    """Write the histograms and (when ``figures``) the figure and heatmap of one firing."""
    base = f"{prefix}influence/{group}"
    for element, values in zip(elements, influence, strict=True):
        writer.add_histogram(f"{base}/{element}", values.detach().double().cpu(), step)
    if not figures:
        return
    figure = summary_figure(elements, influence, equivariance, f"{group}, step {step}")
    writer.add_figure(f"{base}/figure", figure, step, close=True)
    writer.add_image(f"{base}/heatmap", heatmap_image(influence), step)


def layout_for(prefix: str, group: str, elements: Sequence[str]) -> dict[str, dict[str, list]]:
    """Custom-scalars category for one group: charts with one regex-escaped line per element.

    Element names may contain regex metacharacters (``"r|x1y0"``), hence :func:`re.escape`.
    """

    def lines(pattern: str) -> list[str]:
        return [
            "^" + re.escape(pattern.format(prefix=prefix, group=group, element=element)) + "$"
            for element in elements
        ]

    return {
        f"{prefix}coherence/{group}": {
            "ratio per element": ["Multiline", lines("{prefix}coherence/{group}/ratio/{element}")],
            "influence median per element": [
                "Multiline",
                lines("{prefix}influence/{group}/{element}/median"),
            ],
            "equivariance median per element": [
                "Multiline",
                lines("{prefix}equivariance/{group}/{element}/median"),
            ],
        }
    }


def write_layout(writer: Any, prefix: str, group: str, elements: Sequence[str]) -> None:
    """Add this group's category to the writer's single custom-scalars layout and write it.

    Several monitors sharing one writer merge their categories, so the last layout written (the
    one TensorBoard shows) has a chart per group.
    """
    merged: dict[str, dict[str, list]] = getattr(writer, _LAYOUT_ATTRIBUTE, {})
    merged.update(layout_for(prefix, group, elements))
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
