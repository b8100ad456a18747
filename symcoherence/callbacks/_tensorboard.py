r"""What only TensorBoard shows of a firing of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`.

Scalars reach every logger through the monitor; this module writes the rest, arranged so that the
dashboards open on the loss and the verdict:

* one TensorBoard run per element (:class:`ElementRuns`: a sub-folder of the run, so each
  element's line gets its own colour and name). Each logs the decision rule's statistic under
  ``{prefix}basin/{group}/{statistic}`` (the landing section, first in *Time Series*) and the
  other statistics, the flag and every interval bound under ``{prefix}elements/{group}/…``;
* one custom-scalars layout (:func:`layout_for`) whose first category is the loss, the rule's
  statistic per element as margin charts with its interval, the number of flagged elements,
  basin compatibility with its interval and the verdict's timeline; the second holds the other
  statistics (``ρ`` labelled as the paper's, the specific coupling, the forward error);
* a figure per statistic and firing (:func:`symcoherence.plotting.statistic_figure`, titled with
  metric, normalization, probes, step and verdict), the ``(K, N)`` influence heatmap and
  histograms of ``I_n(g)``: ``{prefix}influence/{group}/figure/{statistic}``, ``…/figure/heatmap``,
  ``…/{element}`` (histogram);
* the hparams session with basin compatibility, the number of flagged elements and the paper's
  orbit coherence as its metrics, and the verdict of every firing as text
  (``{prefix}verdict/{group}``, TensorBoard's *Text* tab).

Example:
    >>> from symcoherence.callbacks._tensorboard import layout_for
    >>> from symcoherence.coherence import Keys
    >>> category = layout_for(Keys("D4xShifts"))["basin/D4xShifts: loss and verdict"]
    >>> category["distribution transfer τ(g) per element, 90 % interval"]
    ['Margin', ['basin/D4xShifts/transfer', 'elements/D4xShifts/transfer_lo', 'elements/D4xShifts/transfer_hi']]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from symcoherence.coherence import DecisionRule, Keys, Measurement, Summary
from symcoherence.coherence.statistics.keys import FAMILIES

_LAYOUT_ATTRIBUTE = "_symcoherence_custom_scalars"
NAMES = {
    "transfer": "distribution transfer τ(g)",
    "ratio": "the paper's coherence ratio ρ(g)",
    "coupling": "specific coupling z(g)",
    "equivariance": "forward equivariance error E(g)",
    "influence": "influence median I(g)",
}
_ROW_FIELDS = {
    "ratio": ("ratio", "ratio_lo", "ratio_hi"),
    "coupling": ("coupling", "coupling_lo", "coupling_hi"),
    "transfer": ("transfer", "transfer_lo", "transfer_hi"),
    "equivariance": ("equivariance_median", "equivariance_lo", "equivariance_hi"),
    "influence": ("influence_median", "influence_lo", "influence_hi"),
}
# any logged loss of the run (not the monitor's copies under basin/)
LOSS_REGEX = r"^(?!(.*/)?basin/).*loss[^/]*$"


def find_tensorboard_writer(loggers: Sequence[Any]) -> Any | None:
    """The ``SummaryWriter`` of the first TensorBoard logger in ``loggers``, else ``None``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def log_firing(
    writer: Any,
    keys: Keys,
    measurement: Measurement,
    step: int,
    figures: bool,
    title: str,
) -> None:
    """Write the histograms and (when ``figures``) a figure per statistic and the heatmap."""
    from symcoherence.plotting import heatmap_figure, statistic_figure

    base = keys.section("influence")
    influence = measurement.influence.influence.detach().double().cpu()
    for element, values in zip(measurement.elements, influence, strict=True):
        finite = values[values.isfinite()]
        if finite.numel():
            writer.add_histogram(f"{base}/{element}", finite, step)
    if not figures:
        return
    summary = measurement.summary()
    for statistic in ("transfer", "ratio", "coupling", "equivariance"):
        figure = statistic_figure(summary, statistic, title)
        if figure is not None:
            writer.add_figure(keys.figure(statistic), figure, step, close=True)
    writer.add_figure(
        keys.figure("heatmap"),
        heatmap_figure(influence, measurement.elements, f"influence I_n(g) per probe\n{title}"),
        step,
        close=True,
    )


def losses(callback_metrics: Mapping[str, Any], keys: Keys) -> dict[str, float]:
    """The run's logged losses (names containing ``loss``) under :meth:`Keys.loss`, as floats.

    They put the loss beside the verdict in the landing section at every firing; the monitor's
    own keys and non-scalar values are skipped.
    """
    own = re.compile(rf"(^|/)({'|'.join(FAMILIES)})/")
    out = {}
    for name, value in callback_metrics.items():
        if "loss" not in name.rsplit("/", 1)[-1].lower() or own.search(name):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
        if math.isfinite(number):
            out[keys.loss(name)] = number
    return out


def _margin(value: str, lower: str, upper: str) -> list:
    return ["Margin", [value, lower, upper]]


def _multiline(*tags: str) -> list:
    return ["Multiline", ["^" + re.escape(tag) + "$" for tag in tags]]


def layout_for(
    keys: Keys, rule: DecisionRule | None = None, confidence: float = 0.9
) -> dict[str, dict[str, list]]:
    """Custom-scalars categories for one group: loss and verdict first, then the other statistics.

    Margin charts draw each element's run as its own line with its interval band: the value tag
    is logged by every element run, the bounds under ``elements/{G}/{statistic}_lo|_hi``.
    """
    rule = rule or DecisionRule()
    statistic, level = rule.statistic, f"{round(100 * confidence)} % interval"
    per = keys.per_element

    def margin(name: str, value: str | None = None) -> list:
        return _margin(value or per(name), per(f"{name}_lo"), per(f"{name}_hi"))

    timeline = "^" + re.escape(keys.section("coherence")) + "/first_flagged/"
    landing = {
        "loss (train, val)": ["Multiline", [LOSS_REGEX]],
        f"{NAMES[statistic]} per element, {level}": margin(statistic, keys.headline(statistic)),
        f"flagged elements ({rule.describe()})": _multiline(keys.suppressed_count()),
        f"basin compatibility: min over g ≠ e of {statistic}, {level}": _margin(
            keys.compatibility(), keys.compatibility("lo"), keys.compatibility("hi")
        ),
        "step each element was first flagged": ["Multiline", [timeline]],
    }
    others = {
        f"{NAMES[name]} per element, {level}": margin(name)
        for name in ("transfer", "ratio", "coupling", "equivariance")
        if name != statistic
    }
    others["the paper's orbit coherence: mean over g ≠ e of ρ(g)"] = _multiline(keys.orbit())
    others["influence median I(g) per element"] = _multiline(per("influence"))
    return {
        f"{keys.section('basin')}: loss and verdict": landing,
        f"{keys.section('coherence')}: the other statistics": others,
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
        """Log each element's statistics, interval bounds and flag (finite ones) at ``step``."""
        headline, flags = summary.rule.statistic, summary.suppressed
        for row in summary:
            writer = self._writer(row.element)
            values: dict[str, float] = {}
            for name, fields in _ROW_FIELDS.items():
                value, low, high = (getattr(row, field) for field in fields)
                tag = self.keys.headline(name) if name == headline else self.keys.per_element(name)
                values[tag] = value
                values[self.keys.per_element(f"{name}_lo")] = low
                values[self.keys.per_element(f"{name}_hi")] = high
            flagged = flags.get(row.element)
            if flagged is not None:
                values[self.keys.per_element("suppressed")] = float(flagged)
            for tag, value in values.items():
                if math.isfinite(value):
                    writer.add_scalar(tag, value, step)
            writer.flush()

    def close(self) -> None:
        """Close every writer."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def write_layout(writer: Any, keys: Keys, rule: DecisionRule, confidence: float) -> None:
    """Add this group's category to the writer's single custom-scalars layout and write it.

    Several monitors sharing one writer merge their categories, so the last layout written (the
    one TensorBoard shows) has a chart per group.
    """
    merged: dict[str, dict[str, list]] = getattr(writer, _LAYOUT_ATTRIBUTE, {})
    merged.update(layout_for(keys, rule, confidence))
    setattr(writer, _LAYOUT_ATTRIBUTE, merged)
    writer.add_custom_scalars(merged)


def _name_metrics(experiment: Any, names: Mapping[str, str]) -> None:
    """Give the hparams session's metrics display names (``{tag: name}``)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.metric_infos:
        info.display_name = names.get(info.name.tag, info.name.tag)
    value.metadata.plugin_data.content = data.SerializeToString()


def write_hparams(
    writer: Any, params: Mapping[str, Any], metrics: Sequence[str] | Mapping[str, str]
) -> None:
    """Write an hparams session whose metrics point at scalar tags the run will log.

    Writing the summaries directly (rather than ``logger.log_hyperparams(..., metrics=...)``)
    avoids adding a misleading point at step 0 to the metrics' scalar series: the hparams
    dashboard reads the last value of each scalar tag named in ``metrics`` (a mapping gives
    each its display name).
    """
    from torch.utils.tensorboard.summary import hparams

    clean = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in params.items()
    }
    # the values only declare the metrics; the dashboard shows the tags' last logged values
    experiment, start, end = hparams(clean, dict.fromkeys(metrics, 0.0))
    if isinstance(metrics, Mapping):
        _name_metrics(experiment, metrics)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)


def write_verdict(writer: Any, keys: Keys, text: str, step: int) -> None:
    """Write one firing's verdict (markdown) to the *Text* tab at ``step``."""
    writer.add_text(keys.verdict_text(), text, step)


def write_monitor_hparams(
    writer: Any, hparams: Mapping[str, Any], record: Mapping[str, Any], keys: Keys, probe_size: int
) -> None:
    """The monitor's hparams session: basin compatibility, flagged count, the paper's orbit coherence.

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
    rule = record.get("rule") or "transfer interval below 0.5"
    write_hparams(
        writer,
        params,
        {
            keys.compatibility(): f"basin compatibility (min over g ≠ e, {rule})",
            keys.suppressed_count(): "flagged elements",
            keys.orbit(): "orbit coherence (the paper's, mean ρ)",
        },
    )


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
        summary = measurement.summary()
        if self.element_runs is None:
            write_layout(writer, self.keys, summary.rule, summary.confidence)
            self.element_runs = ElementRuns(writer.log_dir, self.keys)
        self.element_runs.write(summary, step)
        log_firing(writer, self.keys, measurement, step, figures, title)
        write_verdict(writer, self.keys, verdict, step)

    def close(self) -> None:
        """Close the per-element runs (a later firing reopens them and rewrites the layout)."""
        if self.element_runs is not None:
            self.element_runs.close()
            self.element_runs = None
