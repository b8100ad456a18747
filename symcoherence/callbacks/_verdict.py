r"""The verdict of one firing in words: what the decision rule flagged, what that means, what not.

The first line is the reading, e.g.
``step 0: learning from the probes does not reach r, r3, sr, sr3 (τ < 0.5 at 90 %)``, where
``τ < 0.5 at 90 %`` says that the whole 90 % bootstrap interval of the distribution transfer
``τ(g)`` lies below 0.5 (the decision rule). With a :class:`~symcoherence.callbacks._timeline.Timeline`
a second line says since when each flag stands and whether it held. Then two short paragraphs
state what the reading means and what it does not; the monitor writes the text to TensorBoard's
*Text* tab at every firing and ``symcoherence analyze`` prints it.

Example:
    >>> from types import SimpleNamespace
    >>> from symcoherence.coherence import DecisionRule
    >>> summary = SimpleNamespace(
    ...     rule=DecisionRule(), confidence=0.9, suppressed={"r": True, "r2": False, "r3": True}
    ... )
    >>> reading(summary, step=0)
    'step 0: learning from the probes does not reach r, r3 (τ < 0.5 at 90 %)'
"""

from __future__ import annotations

from typing import Any

from symcoherence.callbacks._timeline import Timeline

SYMBOLS = {"transfer": "τ", "ratio": "ρ", "coupling": "z"}
_DEFINITIONS = {
    "transfer": (
        "a gradient step learned from the probes lowers the loss at the transformed states g·x "
        "by less than {threshold} times as much as at the probes x themselves (the distribution "
        "transfer τ(g))"
    ),
    "ratio": (
        "learning from a probe x_n lowers the loss at g·x_n by less than {threshold} times what "
        "it does at x_n, relative to the other probes (the coherence ratio ρ(g))"
    ),
    "coupling": (
        "the pair (g·x_n, x_n) is coupled by less than {threshold} off-diagonal standard "
        "deviations above unrelated pairs (the specific coupling z(g))"
    ),
}


def _against(rule: Any) -> str:
    return "its random-pair baseline" if rule.threshold == "baseline" else f"{rule.threshold:g}"


def reading(summary: Any, step: int) -> str:
    """One line: the elements the rule flags at ``step`` (or that it flags none).

    Args:
        summary: a :class:`~symcoherence.coherence.Summary` (its ``rule``, ``confidence`` and
            ``suppressed``).
        step: the optimizer step measured.
    """
    rule, level = summary.rule, round(100 * summary.confidence)
    symbol, against = SYMBOLS[rule.statistic], _against(rule)
    flags = summary.suppressed
    flagged = [g for g, value in flags.items() if value]
    undefined = [g for g, value in flags.items() if value is None]
    if not flags:
        return f"step {step}: only the identity was measured; there is nothing to flag"
    if flagged:
        text = (
            f"step {step}: learning from the probes does not reach {', '.join(flagged)} "
            f"({symbol} < {against} at {level} %)"
        )
    else:
        text = (
            f"step {step}: the rule flags no element (no {symbol} interval below {against} at "
            f"{level} %)"
        )
    if undefined:
        text += f"; undefined for {', '.join(undefined)} (no interval could be formed)"
    return text


def history(timeline: Timeline) -> str | None:
    """Since when each element has been flagged and whether it held (``None``: never flagged)."""
    if not timeline.first_flagged:
        return None
    parts = []
    for element, first in timeline.first_flagged.items():
        since = timeline.flagged_since.get(element)
        if since is None:
            parts.append(f"{element} first flagged at step {first}, not flagged now")
        elif timeline.held[element]:
            parts.append(f"{element} flagged since step {first}, held at every firing")
        else:
            parts.append(f"{element} flagged again since step {since} (first at step {first})")
    return "; ".join(parts)


def meaning(summary: Any, probes: str) -> str:
    """What a flag means and what it does not, for the rule of ``summary``.

    Args:
        summary: the firing's :class:`~symcoherence.coherence.Summary`.
        probes: how the probes were drawn, e.g. ``"48 val probes"``.
    """
    rule = summary.rule
    threshold = _against(rule)
    definition = _DEFINITIONS[rule.statistic].format(threshold=threshold)
    level = round(100 * summary.confidence)
    return (
        f"**What a flag means.** For a flagged g, {definition}, with the whole {level} % "
        f"bootstrap interval over the {probes} below {threshold}: a property of this model, these "
        "data and this metric at this step. Validation probes ask whether learning from data like "
        "these reaches g·x (under augmentation a flag there can be a false alarm, since training "
        "itself sees g·x); probes drawn through training's augmentation ask whether this run "
        "will learn g.\n\n"
        "**What it does not mean.** A flag is not a measured failure (the forward equivariance "
        "error E measures that) and not a proof that the trained model will fail g; an element "
        "left unflagged is not shown to be learned. How often the rule flags healthy elements "
        "and catches failing ones is what the README's controlled experiment measures."
    )


def describe_probes(identity: dict[str, Any] | None) -> str:
    """How the probes were drawn, from their identity, e.g. ``"48 train probes (…)"``."""
    identity = identity or {}
    text = f"{identity.get('size', '?')} {identity.get('split', '?')} probes"
    return f"{text} ({identity['transform']})" if identity.get("transform") else text


def verdict_text(summary: Any, step: int, probes: str, timeline: Timeline | None = None) -> str:
    """The whole text of one firing: reading, history (if any flag), meaning (markdown)."""
    lines = [reading(summary, step)]
    past = None if timeline is None else history(timeline)
    if past:
        lines.append(past)
    return "\n\n".join([*lines, meaning(summary, probes)])


__all__ = ["SYMBOLS", "describe_probes", "history", "meaning", "reading", "verdict_text"]
