"""The names of every logged scalar, built in one place.

TensorBoard groups scalars on the first path segment, so each family is its own section:

==================================================  ==========================================
key                                                 value
==================================================  ==========================================
``{p}influence/{G}/{g}/{median|q1|q3}``             quantiles over probes of ``I_n(g)``
``{p}influence/{G}/{g}/{median_lo|median_hi}``      bootstrap interval of the median
``{p}coherence/{G}/ratio/{g}``                      ``ρ(g)`` (+ ``ratio_lo/{g}``, ``ratio_hi/{g}``)
``{p}coherence/{G}/coupling/{g}``                   median specific coupling (+ ``_lo``, ``_hi``)
``{p}coherence/{G}/transfer/{g}``                   distribution transfer ``τ(g)`` (+ ``_lo``, ``_hi``)
``{p}coherence/{G}/suppressed/{g}``                1 when the decision rule flags ``g``
``{p}coherence/{G}/orbit``                          ``mean_{g≠e} ρ(g)``
``{p}basin/{G}/compatibility``                      ``min_{g≠e} ρ(g)``
``{p}baseline/{G}/{g}/offdiag_median``              ``ρ`` statistic on unrelated pairs of ``g``
``{p}baseline/{G}/offdiag_median``                  the same over all elements
``{p}equivariance/{G}/{g}/{median|q3}``             forward error ``E_n(g)`` (+ ``median_lo|hi``)
``{p}equivariance/{G}/rollout{T}/{g}/{median|q3}``  rollout equivariance error
``{p}basin/{G}/influence_error_rank_corr``          Spearman of ``ρ`` vs ``|log E|`` (q3)
``{p}basin/{G}/influence_error_rank_corr_pvalue``   its permutation p-value
``{p}measurement/{G}/{name}``                       health: ``degenerate_rows``, ``damping``, …
``{p}elements/{G}/{statistic}``                     one series per element, each element in a
                                                    run of its own (TensorBoard colours them)
==================================================  ==========================================

Example:
    >>> keys = Keys("D4", prefix="val/")
    >>> keys.ratio("r"), keys.ratio("r", "lo")
    ('val/coherence/D4/ratio/r', 'val/coherence/D4/ratio_lo/r')
"""

from __future__ import annotations

from dataclasses import dataclass

BOUNDS = ("", "lo", "hi")
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
        """``coherence/{G}/orbit``."""
        return self._key("coherence", "orbit")

    def compatibility(self) -> str:
        """``basin/{G}/compatibility``."""
        return self._key("basin", "compatibility")

    def baseline(self, element: str | None = None) -> str:
        """``baseline/{G}/{g}/offdiag_median`` (``element=None``: over all elements)."""
        if element is None:
            return self._key("baseline", "offdiag_median")
        return self._key("baseline", element, "offdiag_median")

    def equivariance(self, element: str, stat: str) -> str:
        """``equivariance/{G}/{g}/{stat}``, stat in median, q3, median_lo, median_hi."""
        return self._key("equivariance", element, stat)

    def rollout(self, steps: int, element: str, stat: str) -> str:
        """``equivariance/{G}/rollout{T}/{g}/{stat}``."""
        return self._key("equivariance", f"rollout{steps}", element, stat)

    def rank_corr(self, pvalue: bool = False) -> str:
        """``basin/{G}/influence_error_rank_corr`` (``_pvalue`` with ``pvalue``)."""
        return self._key("basin", "influence_error_rank_corr" + ("_pvalue" if pvalue else ""))

    def per_element(self, statistic: str) -> str:
        """``elements/{G}/{statistic}``: the tag an element's own run logs ``statistic`` under."""
        return self._key("elements", statistic)

    def measurement(self, name: str) -> str:
        """``measurement/{G}/{name}`` for a health entry of :data:`HEALTH`."""
        if name not in HEALTH:
            raise ValueError(f"unknown measurement entry {name!r}; expected one of {list(HEALTH)}")
        return self._key("measurement", name)


__all__ = ["BOUNDS", "HEALTH", "Keys"]
