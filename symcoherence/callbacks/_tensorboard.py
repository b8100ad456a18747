r"""What only TensorBoard shows of a firing of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`.

Scalars reach every logger through Lightning; this module writes the rest: a figure per firing
(:func:`symcoherence.plotting.summary_figure`), the ``(K, N)`` influence heatmap
(:func:`symcoherence.plotting.heatmap_figure`), histograms of ``I_n(g)``, one TensorBoard run per
element (:class:`ElementRuns`: a sub-folder of the run, so each element's line gets its own colour
and name), one custom-scalars layout (a chart per statistic with a line per element) and the
hparams session that names basin compatibility and orbit coherence, and the verdict of every
firing as text (:func:`write_verdict`, TensorBoard's *Text* tab). Tags share the first path
segment of the scalars they belong to, so TensorBoard groups them together:
``{prefix}influence/{group}/figure``, ``…/heatmap``, ``…/{element}`` (histogram); the verdict text
is ``{prefix}verdict/{group}`` (:func:`verdict_tag`).

Example:
    >>> from symcoherence.callbacks._tensorboard import layout_for
    >>> from symcoherence.coherence import Keys
    >>> chart = layout_for(Keys("D4xShifts"))["coherence/D4xShifts"]
    >>> chart["ratio ρ(g) per element"]
    ['Multiline', ['^elements/D4xShifts/ratio$']]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from symcoherence.coherence import Keys, Measurement, Summary

_LAYOUT_ATTRIBUTE = "_symcoherence_custom_scalars"
_CHARTS = (
    ("ratio ρ(g) per element", "ratio"),
    ("specific coupling per element", "coupling"),
    ("distribution transfer per element", "transfer"),
    ("influence median per element", "influence"),
    ("equivariance error median per element", "equivariance"),
)
_ROW_FIELDS = {
    "ratio": "ratio",
    "coupling": "coupling",
    "transfer": "transfer",
    "influence": "influence_median",
    "equivariance": "equivariance_median",
}


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


def layout_for(keys: Keys) -> dict[str, dict[str, list]]:
    """Custom-scalars category for one group: a chart per statistic, a line per element run."""
    return {
        keys.section("coherence"): {
            title: ["Multiline", ["^" + re.escape(keys.per_element(statistic)) + "$"]]
            for title, statistic in _CHARTS
        }
    }


class ElementRuns:
    """One TensorBoard run (a ``SummaryWriter`` in a sub-folder of the run) per element.

    Every element logs the same tags (:meth:`~symcoherence.coherence.Keys.per_element`), so
    TensorBoard draws one line per element in a chart, each in its own colour and named after its
    run (``{group}_{element}``).

    Args:
        log_dir: the run's log directory.
        keys: the key builder of the monitor.
    """

    def __init__(self, log_dir: str, keys: Keys):
        self.log_dir, self.keys = Path(log_dir), keys
        self.writers: dict[str, Any] = {}

    def _writer(self, element: str) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        if element not in self.writers:
            folder = f"{self.keys.prefix}{self.keys.group}_{element}".replace("/", "_")
            self.writers[element] = SummaryWriter(str(self.log_dir / folder.replace("|", "+")))
        return self.writers[element]

    def write(self, summary: Summary, step: int) -> None:
        """Log each element's statistics (finite ones) into its run at ``step``."""
        for row in summary:
            writer = self._writer(row.element)
            for _, statistic in _CHARTS:
                value = getattr(row, _ROW_FIELDS[statistic])
                if math.isfinite(value):
                    writer.add_scalar(self.keys.per_element(statistic), value, step)
            writer.flush()

    def close(self) -> None:
        """Close every writer."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def write_layout(writer: Any, keys: Keys) -> None:
    """Add this group's category to the writer's single custom-scalars layout and write it.

    Several monitors sharing one writer merge their categories, so the last layout written (the
    one TensorBoard shows) has a chart per group.
    """
    merged: dict[str, dict[str, list]] = getattr(writer, _LAYOUT_ATTRIBUTE, {})
    merged.update(layout_for(keys))
    setattr(writer, _LAYOUT_ATTRIBUTE, merged)
    writer.add_custom_scalars(merged)


def write_hparams(writer: Any, params: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Write an hparams session whose metrics point at scalar tags the run will log.

    Writing the summaries directly (rather than ``logger.log_hyperparams(..., metrics=...)``)
    avoids adding a misleading point at step 0 to the metrics' scalar series: the hparams
    dashboard reads the last value of each scalar tag named in ``metrics``.
    """
    from torch.utils.tensorboard.summary import hparams

    clean = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in params.items()
    }
    # the values only declare the metrics; the dashboard shows the tags' last logged values
    experiment, start, end = hparams(clean, dict.fromkeys(metrics, 0.0))
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)


def verdict_tag(keys: Keys) -> str:
    """``{prefix}verdict/{group}``: the text tag of the per-firing verdict."""
    return keys.section("verdict")


def write_verdict(writer: Any, keys: Keys, text: str, step: int) -> None:
    """Write one firing's verdict (markdown) to the *Text* tab at ``step``."""
    writer.add_text(verdict_tag(keys), text, step)


def write_monitor_hparams(
    writer: Any, hparams: Mapping[str, Any], record: Mapping[str, Any], keys: Keys, probe_size: int
) -> None:
    """The monitor's hparams session, with basin compatibility and orbit coherence as metrics.

    The module's hparams and the measurement settings are the session's hparams
    (see :func:`write_hparams`).

    Args:
        writer: the run's ``SummaryWriter``.
        hparams: the LightningModule's hyper-parameters.
        record: :meth:`~symcoherence.coherence.MeasurementSpec.record` of the monitor's spec.
        keys: the monitor's key builder.
        probe_size: number of probes.
    """
    params = dict(hparams or {})
    stem = f"{keys.prefix}monitor/{record['group']}"
    for setting in ("metric", "normalization"):
        params[f"{stem}/{setting}"] = record[setting]
    params[f"{stem}/probe_size"] = probe_size
    write_hparams(writer, params, [keys.compatibility(), keys.orbit()])


class TensorBoardView:
    """What one monitor writes to a run's TensorBoard beyond scalars, with its write-once state.

    The hparams session and the custom-scalars layout are written once per run; the per-element
    runs are opened at the first firing and closed at :meth:`close`.

    Args:
        keys: the monitor's key builder.
    """

    def __init__(self, keys: Keys):
        self.keys = keys
        self.hparams_written = False
        self.element_runs: ElementRuns | None = None

    def hparams(
        self, writer: Any, hparams: Mapping[str, Any], record: Mapping[str, Any], probes: int
    ) -> None:
        """The run's first hparams session (:func:`write_monitor_hparams`), once."""
        if not self.hparams_written:
            write_monitor_hparams(writer, hparams, record, self.keys, probes)
            self.hparams_written = True

    def firing(
        self,
        writer: Any,
        measurement: Measurement,
        step: int,
        *,
        figures: bool,
        title: str,
        verdict: str,
    ) -> None:
        """Layout (once), per-element runs, histograms, figures and the verdict of one firing."""
        if self.element_runs is None:
            write_layout(writer, self.keys)
            self.element_runs = ElementRuns(writer.log_dir, self.keys)
        self.element_runs.write(measurement.summary(), step)
        log_firing(writer, self.keys, measurement, step, figures, title)
        write_verdict(writer, self.keys, verdict, step)

    def close(self) -> None:
        """Close the per-element runs (a later firing reopens them and rewrites the layout)."""
        if self.element_runs is not None:
            self.element_runs.close()
            self.element_runs = None
