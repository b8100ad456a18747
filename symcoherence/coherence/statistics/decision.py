r"""When an element is reported as **suppressed**: a decision rule on one statistic's interval.

An element ``g ≠ e`` is flagged when the *upper* end of the bootstrap interval of the chosen
statistic lies below the threshold — the whole interval says "less than that":

* ``DecisionRule("transfer", 0.5)`` (the default): learning from the probes lowers the loss at
  the transformed states by less than half as much as at the probes themselves, with confidence.
  In the controlled experiment (3 training seeds × 3 probe draws of 48 probes) it flagged none of
  126 null elements (isotropic data, the group-averaged model) under the identity and Adam metrics
  and 44 % (identity) / 69 % (Adam) of the elements the anisotropic model fails on (E ≈ 40);
* ``DecisionRule("transfer", 0.0)``: a step learned from the probes *raises* the loss at the
  transformed states (stricter: 11 % / 0 % of the failing elements there);
* ``DecisionRule("ratio", "baseline")``: the coherence ratio stands below the element's own
  random-pair baseline;
* any statistic (``"ratio"``, ``"coupling"``, ``"transfer"``) against a number.

The identity is never flagged; an element whose interval is undefined is not flagged either (and
is reported as undefined). How often a rule flags healthy elements (false positives on null
variants) and catches failing ones is what the controlled experiment measures.

Example:
    >>> from symcoherence.coherence.statistics.decision import DecisionRule
    >>> DecisionRule("ratio", "baseline").describe()
    'ratio interval below the random-pair baseline'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

STATISTICS = ("ratio", "coupling", "transfer")


@dataclass(frozen=True)
class DecisionRule:
    """Flag an element when ``{statistic}_hi < threshold`` (see the module docstring).

    Args:
        statistic: ``"ratio"``, ``"coupling"`` or ``"transfer"``.
        threshold: a number, or ``"baseline"`` (the element's random-pair baseline; ratio only).

    Raises:
        ValueError: for an unknown statistic or a threshold that does not fit it.
    """

    statistic: str = "transfer"
    threshold: float | str = 0.5

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"unknown statistic {self.statistic!r} for a decision rule; expected one of "
                f"{list(STATISTICS)}"
            )
        if self.threshold == "baseline" and self.statistic != "ratio":
            raise ValueError(
                "threshold='baseline' compares with the random-pair baseline of the coherence "
                "ratio; use statistic='ratio' or a number"
            )
        if self.threshold != "baseline" and not isinstance(self.threshold, (int, float)):
            raise ValueError(f"threshold must be a number or 'baseline', got {self.threshold!r}")

    def suppressed(self, row: Any) -> bool | None:
        """Whether the element of ``row`` (an ``ElementSummary``) is flagged; ``None``: undefined."""
        upper = getattr(row, f"{self.statistic}_hi")
        limit = row.baseline if self.threshold == "baseline" else float(self.threshold)
        if not (math.isfinite(upper) and math.isfinite(limit)):
            return None
        return upper < limit

    def describe(self) -> str:
        """The rule in words, for reports."""
        against = (
            "the random-pair baseline" if self.threshold == "baseline" else f"{self.threshold:g}"
        )
        return f"{self.statistic} interval below {against}"


__all__ = ["STATISTICS", "DecisionRule"]
