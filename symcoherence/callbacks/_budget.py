r"""The monitor's overhead budget: space firings so that measuring costs what the user allows.

With a budget ``β`` (``max_overhead``), a firing that took ``c`` seconds is followed by at least

.. math:: \Delta = \Big\lceil \frac{c}{β \, t_{\text{step}}} \Big\rceil

optimizer steps, with ``t_step`` the mean wall time of a training step since the previous firing
(validation and everything else that is not the monitor included). Monitor time then stays within
``β`` × training time. The interval is a number of **steps**, agreed across data-parallel ranks
(the largest wins) and stored in checkpoints, so every rank fires at the same steps and a resumed
run continues the schedule it had; only the choice of the next interval reads the clock.

Example:
    >>> ticks = iter([0.0, 12.0])     # a fake clock: 10 s of training + a 2 s firing by step 100
    >>> budget = OverheadBudget(0.05, clock=lambda: next(ticks))
    >>> budget.start(step=0)
    >>> budget.record(step=100, seconds=2.0)   # a 2 s firing: 2 / (0.05 × 0.1 s) = 400 steps
    400
    >>> budget.allows(450), budget.allows(500)
    (False, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


class OverheadBudget:
    """Firing spacing under ``max_overhead`` (see the module docstring).

    Args:
        max_overhead: ``β`` in ``(0, 1)``, or ``None`` for no budget (every scheduled firing runs).
        clock: seconds as a float (``time.perf_counter``; tests pass a fake).
        agree: combines this rank's interval with the other ranks' (default: identity).
    """

    def __init__(
        self,
        max_overhead: float | None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        agree: Callable[[int], int] = lambda interval: interval,
    ):
        if max_overhead is not None and not 0 < max_overhead < 1:
            raise ValueError(
                f"max_overhead must be a fraction in (0, 1) such as 0.05, or None for no budget; "
                f"got {max_overhead!r}"
            )
        self.max_overhead = max_overhead
        self.clock, self.agree = clock, agree
        self.next_step = 0
        self.interval = 0
        self.monitor_seconds = 0.0
        self._started: float | None = None
        self._start_step: int | None = None
        self._mark: tuple[float, int] | None = None

    def start(self, step: int) -> None:
        """Start the clock at training start (``step`` is the current global step)."""
        now = self.clock()
        self._started, self._mark, self._start_step = now, (now, step), step

    def allows(self, step: int) -> bool:
        """Whether a scheduled firing at ``step`` fits the budget."""
        return self.max_overhead is None or step >= self.next_step

    def record(self, step: int, seconds: float) -> int:
        """Account for a firing at ``step`` that took ``seconds``; return the chosen interval."""
        now = self.clock()
        self.monitor_seconds += seconds
        if self._mark is None:
            self._started, self._mark = now - seconds, (now - seconds, step)
        mark_time, mark_step = self._mark
        steps = step - mark_step
        train_seconds = now - mark_time - seconds
        interval = 0
        if self.max_overhead is not None and steps > 0 and train_seconds > 0:
            interval = math.ceil(seconds / (self.max_overhead * train_seconds / steps))
        self.interval = self.agree(interval)
        self.next_step = step + self.interval
        self._mark = (now, step)
        return self.interval

    @property
    def overhead(self) -> float:
        """Monitor time ÷ the rest of the wall time since :meth:`start`.

        NaN until a firing after the first training step: a firing at the start step has no
        training time to be a share of.
        """
        if self._started is None or self._mark is None or self._mark[1] == self._start_step:
            return float("nan")
        rest = self.clock() - self._started - self.monitor_seconds
        return self.monitor_seconds / rest if rest > 0 else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """The schedule: next allowed step and the interval that set it."""
        return {"next_step": self.next_step, "interval": self.interval}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved schedule."""
        self.next_step = int(state.get("next_step", 0))
        self.interval = int(state.get("interval", 0))
