r"""From influence matrices ``H^g`` to the numbers a user reads: statistics, intervals, verdicts.

In the order a measurement uses them:

* :mod:`.normalization` — ``standard``, ``cosine`` or ``none`` applied to ``H``;
* :mod:`.per_probe` — per-probe statistics: the specific coupling ``z_n(g)`` and the transfer per
  unit gradient ``t_n(g)`` behind the distribution transfer ``τ(g)``;
* :mod:`.resampling` — the paired bootstrap over probes and permutation tests;
* :mod:`.decision` — when an element is reported suppressed (:class:`DecisionRule`);
* :mod:`.summary` — the per-element :class:`Summary` with intervals and baselines;
* :mod:`.keys` — the name of every logged scalar (:class:`Keys`).

Example:
    >>> from symcoherence.coherence.statistics import DecisionRule
    >>> DecisionRule("transfer", 0.5).statistic
    'transfer'
"""

from symcoherence.coherence.statistics.decision import DecisionRule
from symcoherence.coherence.statistics.keys import Keys
from symcoherence.coherence.statistics.normalization import NORMALIZATIONS, normalize
from symcoherence.coherence.statistics.per_probe import quantiles, specific_coupling, unit_transfer
from symcoherence.coherence.statistics.resampling import (
    bootstrap_interval,
    resampled_medians,
    spearman,
)
from symcoherence.coherence.statistics.summary import ElementSummary, Summary, summarize

__all__ = [
    "NORMALIZATIONS",
    "DecisionRule",
    "ElementSummary",
    "Keys",
    "Summary",
    "bootstrap_interval",
    "normalize",
    "quantiles",
    "resampled_medians",
    "spearman",
    "specific_coupling",
    "summarize",
    "unit_transfer",
]
