r"""A shareable report of one measurement: self-contained HTML, markdown or JSON.

``symcoherence analyze … --report report.html`` writes it. It holds the verdict in words, the
per-element table (the decision rule's statistic, the distribution transfer ``τ``, the specific
coupling ``z`` and the paper's ratio ``ρ`` with their bootstrap intervals, the random-pair
baseline, the forward equivariance error ``E`` median and q3), basin compatibility, the settings,
the exact command that reproduces it and, given a run folder (``--run``), the statistics over the
training steps read from its TensorBoard event files. The HTML embeds its figures as PNG data
URIs and loads nothing from the network; ``--format markdown`` and ``--format json`` give the
same content for scripts and READMEs.

Example:
    >>> from symcoherence.cli.report import FORMATS
    >>> FORMATS
    ('html', 'markdown', 'json')
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from symcoherence.callbacks._verdict import SYMBOLS, meaning, reading
from symcoherence.coherence import Keys, Summary

FORMATS = ("html", "markdown", "json")
_COLUMNS = ("transfer", "coupling", "ratio")


def format_for(path: Path, requested: str | None) -> str:
    """The report's format: ``requested``, else from the suffix (``.md`` markdown, ``.json``)."""
    if requested is not None:
        if requested not in FORMATS:
            raise ValueError(f"--format must be one of {list(FORMATS)}, got {requested!r}")
        return requested
    suffix = path.suffix.lower()
    return {".md": "markdown", ".markdown": "markdown", ".json": "json"}.get(suffix, "html")


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces the report, quoted for a POSIX shell."""
    return shlex.join(["symcoherence", "analyze", *argv])


def _number(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.3g}"


def _interval(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3f} [{_number(low)}, {_number(high)}]"


def table(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-element table (strings)."""
    level = round(100 * summary.confidence)
    header = [
        "element",
        "flagged",
        f"transfer τ [{level} %]",
        f"coupling z [{level} %]",
        f"ratio ρ, the paper's [{level} %]",
        "ρ baseline",
        f"E median [{level} %]",
        "E q3",
    ]
    flags = summary.suppressed
    rows = []
    for row in summary:
        flag = flags.get(row.element)
        rows.append(
            [
                row.element,
                "identity" if row.element == summary.identity else
                ("undefined" if flag is None else ("yes" if flag else "no")),
                _interval(row.transfer, row.transfer_lo, row.transfer_hi),
                _interval(row.coupling, row.coupling_lo, row.coupling_hi),
                _interval(row.ratio, row.ratio_lo, row.ratio_hi),
                _number(row.baseline),
                _interval(row.equivariance_median, row.equivariance_lo, row.equivariance_hi),
                _number(row.equivariance_q3),
            ]
        )  # fmt: skip
    return header, rows


def headline(summary: Summary) -> str:
    """Basin compatibility with its interval and the number of flagged elements, in words."""
    symbol = SYMBOLS[summary.rule.statistic]
    return (
        f"basin compatibility min over g ≠ e of {symbol}(g) = "
        f"{_interval(summary.compatibility, summary.compatibility_lo, summary.compatibility_hi)}"
        f"; {summary.suppressed_count} of {len(summary.suppressed)} elements flagged "
        f"({summary.rule.describe()}); the paper's orbit coherence mean ρ = "
        f"{_number(summary.orbit)}"
    )


def history(run: Path, group: str, statistic: str, prefix: str = "") -> dict[str, Any]:
    """Per element, the rule's statistic and its interval over the steps of a run folder.

    Reads the TensorBoard event files under ``run`` (the run's main folder; the per-element runs
    are not needed): ``coherence/{G}/{statistic}[_lo|_hi]/{g}`` and ``basin/{G}/suppressed``.

    Returns:
        ``{"steps": {element: [...]}, "value": {element: [...]}, "lo": …, "hi": …,
        "suppressed": [[step, count], …]}``.

    Raises:
        FileNotFoundError: when ``run`` holds no event file with the monitor's scalars.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keys = Keys(group, prefix)
    folders = sorted({path.parent for path in Path(run).rglob("events.out.tfevents.*")})
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags().get("scalars", []))
        if keys.suppressed_count() not in tags:
            continue
        out: dict[str, Any] = {"steps": {}, "value": {}, "lo": {}, "hi": {}, "suppressed": []}
        stem = keys.section("coherence")
        for tag in sorted(tags):
            for bound, name in (("", "value"), ("_lo", "lo"), ("_hi", "hi")):
                head = f"{stem}/{statistic}{bound}/"
                if tag.startswith(head):
                    element = tag[len(head) :]
                    scalars = events.Scalars(tag)
                    out[name][element] = [e.value for e in scalars]
                    if not bound:
                        out["steps"][element] = [e.step for e in scalars]
        out["suppressed"] = [[e.step, e.value] for e in events.Scalars(keys.suppressed_count())]
        return out
    raise FileNotFoundError(
        f"no TensorBoard event file under {run} holds {keys.suppressed_count()}; pass the run's "
        "log folder (e.g. runs/quickstart/version_0)"
    )


def history_figure(series: Mapping[str, Any], statistic: str, threshold: Any) -> Any:
    """The rule's statistic per element over training steps, its interval shaded."""
    from symcoherence.plotting import _figure

    figure = _figure(7.0, 3.8)
    ax = figure.subplots()
    for index, (element, steps) in enumerate(series["steps"].items()):
        values = series["value"][element]
        ax.plot(steps, values, "o-", ms=3, color=f"C{index % 10}", label=element)
        low, high = series["lo"].get(element), series["hi"].get(element)
        if low and high and len(low) == len(high) == len(steps):
            ax.fill_between(steps, low, high, color=f"C{index % 10}", alpha=0.15)
    if isinstance(threshold, (int, float)):
        ax.axhline(float(threshold), color="C3", ls="--", lw=1.2, label="rule threshold")
    ax.set_xlabel("step", fontsize=12)
    ax.set_ylabel(f"{SYMBOLS[statistic]}(g) ({statistic})", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, ncol=2)
    ax.set_title(f"{statistic} over training, 90 % intervals shaded", fontsize=11, loc="left")
    return figure


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def document(
    summary: Summary,
    *,
    title: str,
    step: int | None,
    settings: Mapping[str, Any],
    command: str,
    probes: str,
    series: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's content as plain data (what ``--format json`` writes)."""
    header, rows = table(summary)
    return {
        "title": title,
        "verdict": reading(summary, step if step is not None else 0),
        "summary": summary.verdict(),
        "headline": headline(summary),
        "compatibility": {
            "statistic": summary.rule.statistic,
            "value": summary.compatibility,
            "lo": summary.compatibility_lo,
            "hi": summary.compatibility_hi,
            "suppressed": summary.suppressed_count,
        },
        "meaning": meaning(summary, probes),
        "table": {"header": header, "rows": rows},
        "elements": [dataclasses.asdict(row) for row in summary],
        "settings": dict(settings),
        "command": command,
        "history": None if series is None else dict(series),
    }


def markdown(content: Mapping[str, Any]) -> str:
    """The report as markdown (no figures)."""
    header, rows = content["table"]["header"], content["table"]["rows"]
    lines = [f"# {content['title']}", "", f"**{content['verdict']}**", "", content["headline"], ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", content["meaning"], "", "## Settings", ""]
    lines += [f"- `{key}`: {value}" for key, value in content["settings"].items()]
    lines += ["", "## Reproduce", "", "```bash", content["command"], "```"]
    if content.get("history"):
        lines += ["", "## Over training", ""]
        suppressed = content["history"]["suppressed"]
        lines += [f"- step {int(step)}: {int(count)} flagged" for step, count in suppressed]
    return "\n".join(lines) + "\n"


def _html_paragraphs(text: str) -> str:
    out = []
    for paragraph in text.split("\n\n"):
        escaped = html.escape(paragraph)
        while "**" in escaped:
            escaped = escaped.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
        out.append(f"<p>{escaped}</p>")
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.flagged td { background: #fde8e8; }
.verdict { font-size: 1.25em; font-weight: 600; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; }
"""


def render_html(content: Mapping[str, Any], figures: Sequence[tuple[str, Any]]) -> str:
    """The report as one HTML file: inline style, figures as PNG data URIs, no external URL."""
    header, rows = content["table"]["header"], content["table"]["rows"]
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        marker = ' class="flagged"' if row[1] == "yes" else ""
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        body.append(f"<tr{marker}>{cells}</tr>")
    images = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{_png(figure)}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, figure in figures
    )
    settings = "".join(
        f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>"
        for key, value in content["settings"].items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(content["title"])}</title><style>{_STYLE}</style></head>
<body>
<h1>symcoherence report</h1>
<p>{html.escape(content["title"])}</p>
<p class="verdict">{html.escape(content["verdict"])}</p>
<p>{html.escape(content["headline"])}</p>
<h2>Per element</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
{_html_paragraphs(content["meaning"])}
<h2>Figures</h2>
{images}
<h2>Settings</h2>
<table><tbody>{settings}</tbody></table>
<h2>Reproduce</h2>
<pre>{html.escape(content["command"])}</pre>
</body></html>
"""


def write_report(
    path: Path,
    summary: Summary,
    *,
    title: str,
    step: int | None,
    settings: Mapping[str, Any],
    command: str,
    probes: str,
    series: Mapping[str, Any] | None = None,
    report_format: str | None = None,
) -> Path:
    """Write the report to ``path`` in ``report_format`` (default: from the suffix)."""
    from symcoherence.plotting import statistic_figure

    chosen = format_for(path, report_format)
    content = document(
        summary,
        title=title,
        step=step,
        settings=settings,
        command=command,
        probes=probes,
        series=series,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "json":
        path.write_text(json.dumps(content, indent=2, default=str))
    elif chosen == "markdown":
        path.write_text(markdown(content))
    else:
        figures = []
        if series is not None:
            rule = summary.rule
            figures.append(
                ("over training", history_figure(series, rule.statistic, rule.threshold))
            )
        for name in ("transfer", "ratio", "coupling", "equivariance"):
            figure = statistic_figure(summary, name, title, content["verdict"])
            if figure is not None:
                figures.append((name, figure))
        path.write_text(render_html(content, figures))
    return path


__all__ = ["FORMATS", "command_line", "document", "history", "markdown", "write_report"]
