"""The names of every logged scalar, built in one place.

TensorBoard groups scalars on the first path segment and sorts the groups (its *Time Series* tab
opens the first two and collapses the rest), so the families are named for the order a user reads
them in. ``basin/`` sorts first and holds the landing view: the loss at each measurement, the
decision rule's statistic per element (from the per-element runs) and the verdict. ``coherence/``
follows with every statistic per element and its interval; the controls, quantiles, forward
errors and the measurement's health come after and start collapsed.

==================================================  ==========================================
key                                                 value
==================================================  ==========================================
``{p}basin/{G}/compatibility``                      ``min_{g≠e}`` of the decision rule's
                                                    statistic (default ``τ``); its interval is
                                                    ``coherence/{G}/compatibility_lo|_hi``
``{p}basin/{G}/suppressed``                         number of elements the rule flags
``{p}basin/{G}/loss/{name}``                        the run's loss ``{name}`` at the firing
``{p}basin/{G}/{statistic}``                        the rule's statistic, one series per element
                                                    in its own run (TensorBoard colours them)
``{p}coherence/{G}/ratio/{g}``                      ``ρ(g)`` (+ ``ratio_lo/{g}``, ``ratio_hi/{g}``)
``{p}coherence/{G}/ratio_baseline/{g}``             ``ρ`` statistic on unrelated pairs of ``g``
``{p}coherence/{G}/ratio_baseline``                 the same over all elements
``{p}coherence/{G}/coupling/{g}``                   median specific coupling (+ ``_lo``, ``_hi``)
``{p}coherence/{G}/transfer/{g}``                   distribution transfer ``τ(g)`` (+ ``_lo``, ``_hi``)
``{p}coherence/{G}/suppressed/{g}``                 1 when the decision rule flags ``g``
``{p}coherence/{G}/first_flagged/{g}``              the verdict's timeline (+ ``flag_held``,
                                                    ``flagged_since``)
``{p}coherence/{G}/orbit``                          the paper's orbit coherence ``mean_{g≠e} ρ(g)``
``{p}equivariance/{G}/{g}/{median|q3}``             forward error ``E_n(g)``
``{p}equivariance/{G}/rollout{T}/{g}/{median|q3}``  rollout equivariance error
``{p}equivariance/{G}/influence_error_rank_corr``    Spearman of ``ρ`` vs ``|log E|`` (q3)
                                                    (+ ``_pvalue``)
``{p}influence/{G}/{g}/{median|q1|q3}``             quantiles over probes of ``I_n(g)``
``{p}measurement/{G}/{name}``                       health: ``degenerate_rows``, ``damping``, …
``{p}elements/{G}/{statistic}``                     per-element runs: the other statistics and
                                                    the interval bounds the margin charts draw
``{p}verdict/{G}``                                  text: the verdict in words (*Text* tab)
==================================================  ==========================================

Example:
    >>> keys = Keys("D4", prefix="val/")
    >>> keys.ratio("r"), keys.ratio("r", "lo"), keys.compatibility()
    ('val/coherence/D4/ratio/r', 'val/coherence/D4/ratio_lo/r', 'val/basin/D4/compatibility')
"""

from __future__ import annotations

from dataclasses import dataclass

# the first path segment of every key (TensorBoard's sections)
FAMILIES = ("basin", "coherence", "elements", "equivariance", "influence", "measurement", "verdict")
BOUNDS = ("", "lo", "hi")
TIMELINE = ("first_flagged", "flag_held", "flagged_since")
HEALTH = (
    "degenerate_rows",
    "zero_gradients",
    "damping",
    "relative_damping",
    "solver_residual",
    "solver_iterations",
    "memory_budget",
    "chunk_size",
    "seconds",
    "interval_steps",
    "overhead",
)


@dataclass(frozen=True)
class Keys:
    """Key builder for one group and prefix.

    Args:
        group: the group's short name (``"D4"``).
        prefix: prepended to every key (``""``, ``"val/"``).
    """

    group: str
    prefix: str = ""

    def _key(self, family: str, *parts: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"unknown key family {family!r}; expected one of {list(FAMILIES)}")
        return "/".join((f"{self.prefix}{family}", self.group, *parts))

    @staticmethod
    def _bounded(name: str, bound: str) -> str:
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {list(BOUNDS)}, got {bound!r}")
        return f"{name}_{bound}" if bound else name

    def section(self, family: str) -> str:
        """``{prefix}{family}/{G}``: the common stem of one family's keys (and of its figures)."""
        return self._key(family)

    def influence(self, element: str, stat: str) -> str:
        """``influence/{G}/{g}/{stat}``, stat in median, q1, q3, median_lo, median_hi."""
        return self._key("influence", element, stat)

    def ratio(self, element: str, bound: str = "") -> str:
        """``coherence/{G}/ratio[_lo|_hi]/{g}``."""
        return self._key("coherence", self._bounded("ratio", bound), element)

    def coupling(self, element: str, bound: str = "") -> str:
        """``coherence/{G}/coupling[_lo|_hi]/{g}``."""
        return self._key("coherence", self._bounded("coupling", bound), element)

    def transfer(self, element: str, bound: str = "") -> str:
        """``coherence/{G}/transfer[_lo|_hi]/{g}``."""
        return self._key("coherence", self._bounded("transfer", bound), element)

    def suppressed(self, element: str) -> str:
        """``coherence/{G}/suppressed/{g}``: 1 when the decision rule flags the element, else 0."""
        return self._key("coherence", "suppressed", element)

    def orbit(self) -> str:
        """``coherence/{G}/orbit``: the paper's orbit coherence ``mean_{g≠e} ρ(g)``."""
        return self._key("coherence", "orbit")

    def compatibility(self, bound: str = "") -> str:
        """``basin/{G}/compatibility``: ``min_{g≠e}`` of the rule's statistic.

        Its bounds are ``coherence/{G}/compatibility_lo|_hi``, out of the landing section, so
        that its first cards are the loss and the verdict (the margin chart draws them).
        """
        if bound:
            return self._key("coherence", self._bounded("compatibility", bound))
        return self._key("basin", "compatibility")

    def suppressed_count(self) -> str:
        """``basin/{G}/suppressed``: how many elements the decision rule flags."""
        return self._key("basin", "suppressed")

    def loss(self, name: str) -> str:
        """``basin/{G}/loss/{name}``: the run's logged loss ``name`` (``/`` as ``_``) at a firing."""
        return self._key("basin", "loss", name.replace("/", "_"))

    def headline(self, statistic: str) -> str:
        """``basin/{G}/{statistic}``: the tag every per-element run logs the rule's statistic under."""
        return self._key("basin", statistic)

    def baseline(self, element: str | None = None) -> str:
        """``coherence/{G}/ratio_baseline/{g}`` (``element=None``: over all elements)."""
        if element is None:
            return self._key("coherence", "ratio_baseline")
        return self._key("coherence", "ratio_baseline", element)

    def first_flagged(self, element: str) -> str:
        """``coherence/{G}/first_flagged/{g}``: the step the rule first flagged ``g``."""
        return self._key("coherence", "first_flagged", element)

    def flag_held(self, element: str) -> str:
        """``coherence/{G}/flag_held/{g}``: 1 while every firing since the first flag flagged ``g``."""
        return self._key("coherence", "flag_held", element)

    def flagged_since(self, element: str) -> str:
        """``coherence/{G}/flagged_since/{g}``: the first step of the current flag of ``g``."""
        return self._key("coherence", "flagged_since", element)

    def timeline(self, field: str, element: str) -> str:
        """The timeline key ``field`` (one of :data:`TIMELINE`) of ``element``."""
        if field not in TIMELINE:
            raise ValueError(f"unknown timeline field {field!r}; expected one of {list(TIMELINE)}")
        return getattr(self, field)(element)

    def verdict_text(self) -> str:
        """``verdict/{G}``: the text tag of the verdict in words (TensorBoard's *Text* tab)."""
        return self._key("verdict")

    def figure(self, name: str) -> str:
        """``influence/{G}/figure/{name}``: a firing's figure of one statistic (or ``heatmap``)."""
        return self._key("influence", "figure", name)

    def equivariance(self, element: str, stat: str) -> str:
        """``equivariance/{G}/{g}/{stat}``, stat in median, q3, median_lo, median_hi."""
        return self._key("equivariance", element, stat)

    def rollout(self, steps: int, element: str, stat: str) -> str:
        """``equivariance/{G}/rollout{T}/{g}/{stat}``."""
        return self._key("equivariance", f"rollout{steps}", element, stat)

    def rank_corr(self, pvalue: bool = False) -> str:
        """``equivariance/{G}/influence_error_rank_corr`` (``_pvalue`` with ``pvalue``)."""
        name = "influence_error_rank_corr" + ("_pvalue" if pvalue else "")
        return self._key("equivariance", name)

    def per_element(self, statistic: str) -> str:
        """``elements/{G}/{statistic}``: the tag an element's own run logs ``statistic`` under.

        The decision rule's statistic itself is logged under :meth:`headline` instead.
        """
        return self._key("elements", statistic)

    def measurement(self, name: str) -> str:
        """``measurement/{G}/{name}`` for a health entry of :data:`HEALTH`."""
        if name not in HEALTH:
            raise ValueError(f"unknown measurement entry {name!r}; expected one of {list(HEALTH)}")
        return self._key("measurement", name)


__all__ = ["BOUNDS", "FAMILIES", "HEALTH", "TIMELINE", "Keys"]
