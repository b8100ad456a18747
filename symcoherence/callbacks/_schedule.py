r"""When the monitor fires: :class:`FiringSchedule`, and its early part :class:`EarlySchedule`.

``trainer.global_step`` counts optimizer steps (under gradient accumulation the batches in
between never fire) and a step is measured at most once. :class:`FiringSchedule` fires

* at the start (``at_start=True``): before the first optimizer step of a fit — the freshly
  initialized model at step 0, or the resumed model at the step it was saved at (unless that step
  was measured before saving);
* at the steps of the early schedule, after the optimizer step that reached them, outside the
  overhead budget;
* by steps: after the optimizer step that made ``global_step`` a multiple of
  ``every_n_train_steps``; by epochs: at the end of every ``every_n_epochs``-th epoch. These two
  are *budgeted*: the monitor's overhead budget may skip them.

**The early schedule.** A verdict read at initialization (step 0) may move in the first steps of
training; later it changes slowly. :class:`EarlySchedule` fires at log-spaced optimizer steps

.. math:: s_0 = 0, \qquad s_k = \lceil b^{\,k-1} \rceil \quad (k \ge 1), \qquad s_k \le T,

deduplicated — ``0, 1, 2, 4, 8, …`` for the default base ``b = 2`` — and then hands over to the
monitor's regular schedule (``every_n_train_steps`` / ``every_n_epochs`` under the overhead
budget). The steps are a pure function of ``(until, base)`` (or the explicit ``steps``): no clock
is read, so a resumed run continues the same list and every data-parallel rank fires at the same
steps without a collective.

**Cost.** The schedule has ``1 + ⌊log_b T⌋ + 1`` steps at most (12 for ``T = 1024``, ``b = 2``).
Early firings are not spaced by the overhead budget, so over the first ``T`` steps they add
``len(steps) × c`` seconds for a firing of ``c`` seconds — :meth:`EarlySchedule.overhead` gives
that share of a run of ``S`` steps of ``t`` seconds each, ``len(steps) · c / (S · t)``. The budget
still accounts for them: the first regular firing after the early phase waits the interval the
last early firing's cost sets.

Example:
    >>> EarlySchedule(until=64).steps
    (0, 1, 2, 4, 8, 16, 32, 64)
    >>> schedule = EarlySchedule(steps=[10, 0, 25, 50])
    >>> schedule.steps, 25 in schedule, schedule.next_after(25)
    ((0, 10, 25, 50), True, 50)
    >>> plan = FiringSchedule(early=EarlySchedule(until=8), every_n_train_steps=5, every_n_epochs=None)
    >>> plan.steps(total_steps=20, steps_per_epoch=4)
    [0, 1, 2, 4, 5, 8, 10, 15, 20]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


def _check_step_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


class EarlySchedule:
    """Log-spaced (or explicit) optimizer steps at which the monitor fires early in training.

    Args:
        until: last step ``T`` of the log-spaced phase (at least 1).
        base: growth factor ``b > 1`` between consecutive steps.
        steps: explicit steps instead (non-negative integers, any order; duplicates are dropped).
            Give either ``until`` (with ``base``) or ``steps``.

    Raises:
        ValueError: for a non-positive ``until``, a ``base`` not above 1, negative or non-integer
            steps, or both ``until`` and ``steps``.
    """

    def __init__(
        self, until: int | None = None, *, base: float = 2.0, steps: Sequence[int] | None = None
    ):
        if (until is None) == (steps is None):
            raise ValueError(
                "EarlySchedule takes either until=T (log-spaced steps 0, 1, 2, 4, … up to T) or "
                f"steps=[…] (explicit steps), got until={until!r} and steps={steps!r}"
            )
        if steps is not None:
            if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
                raise ValueError(
                    f"steps must be a non-empty list of optimizer steps such as [0, 10, 50], "
                    f"got {steps!r}"
                )
            for step in steps:
                _check_step_count("every early step", step, 0)
            self.until, self.base = max(steps), None
            self.steps: tuple[int, ...] = tuple(sorted(set(steps)))
            return
        _check_step_count("until", until, 1)
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
            raise ValueError(f"base must be a number > 1 such as 2, got {base!r}")
        found, power = {0}, 1.0
        while math.ceil(power) <= until:
            found.add(math.ceil(power))
            power *= base
        self.until, self.base = until, float(base)
        self.steps = tuple(sorted(found))

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EarlySchedule) and other.steps == self.steps

    def __hash__(self) -> int:
        return hash(self.steps)

    def __repr__(self) -> str:
        if self.base is None:
            return f"EarlySchedule(steps={list(self.steps)})"
        return f"EarlySchedule(until={self.until}, base={self.base:g})"

    def next_after(self, step: int) -> int | None:
        """The first early step after ``step`` (``None`` once the early phase is over)."""
        return next((s for s in self.steps if s > step), None)

    def overhead(self, firing_seconds: float, step_seconds: float, total_steps: int) -> float:
        r"""Share of a run's training time the early firings add: ``n · c / (S · t)``.

        Args:
            firing_seconds: ``c``, the wall time of one firing.
            step_seconds: ``t``, the wall time of one training step.
            total_steps: ``S``, the run's optimizer steps; only early steps ``≤ S`` count.
        """
        count = sum(1 for s in self.steps if s <= total_steps)
        return count * firing_seconds / (total_steps * step_seconds)


def as_early_schedule(value: Any) -> EarlySchedule | None:
    """``None``, an :class:`EarlySchedule`, ``T`` (log-spaced up to ``T``) or a list of steps."""
    if value is None or isinstance(value, EarlySchedule):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return EarlySchedule(until=value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return EarlySchedule(steps=list(value))
    raise TypeError(
        "early_schedule takes None, a last step T (log-spaced steps 0, 1, 2, 4, … up to T), a "
        f"list of steps or an EarlySchedule, got {type(value).__name__}"
    )


@dataclass(frozen=True)
class FiringSchedule:
    """The steps at which the monitor fires, as pure decisions (see the module docstring).

    Args:
        at_start: fire before the first optimizer step of a fit.
        early: the early schedule, or ``None``.
        every_n_train_steps: fire after every n-th optimizer step (budgeted), or ``None``.
        every_n_epochs: fire at the end of every n-th epoch (budgeted), or ``None``.
    """

    at_start: bool = True
    early: EarlySchedule | None = None
    every_n_train_steps: int | None = None
    every_n_epochs: int | None = 1

    def at_fit_start(self, step: int, last_step: int) -> bool:
        """Whether to fire before the first optimizer step of a fit that starts at ``step``."""
        early = self.early is not None and step in self.early
        return (self.at_start or early) and step != last_step

    def after_step(self, step: int, last_step: int) -> str | None:
        """After the step that reached ``step``: ``"early"``, ``"budgeted"`` or ``None``."""
        if step == last_step:
            return None
        if self.early is not None and step in self.early:
            return "early"
        n = self.every_n_train_steps
        return "budgeted" if n is not None and step > 0 and step % n == 0 else None

    def at_epoch_end(self, epoch: int, step: int, last_step: int) -> bool:
        """Whether to fire (budgeted) at the end of ``epoch`` (0-based), at ``step``."""
        n = self.every_n_epochs
        return n is not None and (epoch + 1) % n == 0 and step != last_step

    def steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
        """Every step a fresh run of ``total_steps`` fires at when the budget skips nothing."""
        fired, last = [], -1
        if self.at_fit_start(0, last):
            fired.append(last := 0)
        for step in range(1, total_steps + 1):
            if self.after_step(step, last) is not None or (
                step % steps_per_epoch == 0
                and self.at_epoch_end(step // steps_per_epoch - 1, step, last)
            ):
                fired.append(last := step)
        return fired


__all__ = ["EarlySchedule", "FiringSchedule", "as_early_schedule"]
