r"""The verdict as a timeline: when the decision rule first flagged each element, and since when.

Each firing gives, per element ``g ≠ e``, the decision rule's reading ``f_s(g) ∈ {flagged, not
flagged, undefined}`` at step ``s``. The timeline keeps, over the firings seen so far:

* ``first_flagged(g) = min {s : f_s(g) = flagged}`` — the step of the first flag;
* ``flagged_since(g)``: the first step of the current unbroken run of flags (``None`` when ``g``
  is not flagged now) — the start of a *stable* flag, what a lead time is measured from;
* ``held(g)``: whether every firing since ``first_flagged(g)`` flagged ``g`` again. An undefined
  reading (an interval that could not be formed) breaks the hold: it did not confirm the flag.

It is a small pure object (no Lightning), so a script can feed it the readings of its own
measurements; the monitor keeps it in its checkpointed state, so a resumed run continues it.

Logged keys (built by :class:`~symcoherence.coherence.Keys`), for each element once the rule has
flagged it: ``{prefix}coherence/{G}/first_flagged/{g}`` (the step), ``…/flag_held/{g}`` (1 or 0)
and, while the flag stands, ``…/flagged_since/{g}`` (the step).

Example:
    >>> timeline = Timeline()
    >>> for step, flags in [(0, {"r": True, "s": False}), (1, {"r": True, "s": True}),
    ...                     (2, {"r": True, "s": False})]:
    ...     timeline.update(step, flags)
    >>> timeline.first_flagged, timeline.held, timeline.flagged_since
    ({'r': 0, 's': 1}, {'r': True, 's': False}, {'r': 0})
    >>> sorted(timeline.scalars("D4"))[:2]
    ['coherence/D4/first_flagged/r', 'coherence/D4/first_flagged/s']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from symcoherence.coherence.statistics.keys import TIMELINE as FIELDS
from symcoherence.coherence.statistics.keys import Keys


class Timeline:
    """Per element, the first step flagged, the start of the current flag, and whether it held."""

    def __init__(self) -> None:
        self.first_flagged: dict[str, int] = {}
        self.flagged_since: dict[str, int] = {}
        self.held: dict[str, bool] = {}
        self.last_step: int | None = None

    def update(self, step: int, flags: Mapping[str, bool | None]) -> None:
        """Add the readings ``{element: flagged (True/False) or None (undefined)}`` of ``step``.

        A step at or before the last one added is ignored (a resumed run re-measuring the step
        it was saved at adds nothing).
        """
        if self.last_step is not None and step <= self.last_step:
            return
        self.last_step = step
        for element, flagged in flags.items():
            if flagged:
                self.first_flagged.setdefault(element, step)
                self.flagged_since.setdefault(element, step)
                self.held.setdefault(element, True)
            else:
                self.flagged_since.pop(element, None)
                if element in self.held:
                    self.held[element] = False

    def scalars(self, group: str, prefix: str = "") -> dict[str, float]:
        """The timeline under its logged keys (elements the rule never flagged are absent)."""
        keys, out = Keys(group, prefix), {}
        for element, step in self.first_flagged.items():
            out[keys.first_flagged(element)] = float(step)
            out[keys.flag_held(element)] = float(self.held[element])
        for element, step in self.flagged_since.items():
            out[keys.flagged_since(element)] = float(step)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {
            "first_flagged": dict(self.first_flagged),
            "flagged_since": dict(self.flagged_since),
            "held": dict(self.held),
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a saved timeline."""
        self.first_flagged = {k: int(v) for k, v in state.get("first_flagged", {}).items()}
        self.flagged_since = {k: int(v) for k, v in state.get("flagged_since", {}).items()}
        self.held = {k: bool(v) for k, v in state.get("held", {}).items()}
        last = state.get("last_step")
        self.last_step = None if last is None else int(last)


__all__ = ["FIELDS", "Timeline"]
