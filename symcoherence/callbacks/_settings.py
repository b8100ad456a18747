"""Checks of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`'s settings.

:func:`check_settings` checks the arguments at construction, :func:`check_run` the strategy and
the declared symmetries at ``setup``; each raises with a one-line message naming the fix. The
probe set's fit with data and model is checked when it is drawn
(:func:`~symcoherence.callbacks._probes.check_configuration`).

Example:
    >>> check_settings(every_n_train_steps=None, every_n_epochs=None, at_start=False,
    ...                early_schedule=None, probe_size=8, probe_split="val", probe_seed=0,
    ...                on_error="warn", prefix="", loss_fn=None)
    Traceback (most recent call last):
    ...
    ValueError: the monitor would never measure: set every_n_train_steps=<n> and/or every_n_epochs=<n>, at_start=True or an early_schedule (or remove the callback)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from symcoherence.callbacks._probes import SPLITS


class ConfigurationError(ValueError, TypeError):
    """The monitor's settings do not fit the data, model or strategy of the run it was added to.

    Raised at the first hook that sees the run (``setup``, ``on_train_start``), with the fix in the
    message; a ``ValueError`` (and a ``TypeError``, for wrong kinds of data) so that callers can
    catch either.
    """


def check_settings(
    *,
    every_n_train_steps: Any,
    every_n_epochs: Any,
    at_start: Any,
    early_schedule: Any,
    probe_size: Any,
    probe_split: Any,
    probe_seed: Any,
    on_error: Any,
    prefix: Any,
    loss_fn: Any,
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the fix for an invalid monitor argument."""
    for name, value in (
        ("every_n_train_steps", every_n_train_steps),
        ("every_n_epochs", every_n_epochs),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if not isinstance(at_start, bool):
        raise TypeError(f"at_start must be True or False, got {at_start!r}")
    if (
        every_n_train_steps is None
        and every_n_epochs is None
        and not at_start
        and early_schedule is None
    ):
        raise ValueError(
            "the monitor would never measure: set every_n_train_steps=<n> and/or "
            "every_n_epochs=<n>, at_start=True or an early_schedule (or remove the callback)"
        )
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 3:
        raise ValueError(
            f"probe_size must be an integer >= 3 (the normalization, the specific coupling and "
            f"the random-pair baseline need several probes; 48 is the default), got {probe_size!r}"
        )
    if probe_split not in SPLITS:
        raise ValueError(f"probe_split must be one of {list(SPLITS)}, got {probe_split!r}")
    if isinstance(probe_seed, bool) or not isinstance(probe_seed, int):
        raise TypeError(f"probe_seed must be an int, got {probe_seed!r}")
    if on_error not in ("warn", "raise"):
        raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
    if not isinstance(prefix, str):
        raise TypeError(
            f"prefix must be a string such as '' or 'probe/', got {type(prefix).__name__}"
        )
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(
            "loss_fn must be callable as loss_fn(pred, target) -> scalar, got "
            f"{type(loss_fn).__name__}"
        )


_REFUSED = {"FSDPStrategy", "DeepSpeedStrategy"}  # flat-parameter sharding: no per-layer tensors


def check_run(trainer: Any, spec: Any) -> None:
    """Refuse FSDP1 and DeepSpeed; warn about measured elements the datamodule does not declare.

    FSDP2 (``fully_shard`` through ``ModelParallelStrategy``) is measured in place with a
    projection, else on a gathered replica (see :mod:`~symcoherence.callbacks._sharded`); DDP as
    it is.

    Args:
        trainer: the run's ``Trainer`` (its ``strategy`` and ``datamodule``).
        spec: the monitor's completed :class:`~symcoherence.coherence.MeasurementSpec`.

    Raises:
        ValueError: under ``FSDPStrategy`` (FSDP1) or DeepSpeed, naming the strategy that works.
    """
    from lightning.pytorch.utilities import rank_zero_warn

    from symcoherence.groups import Group

    strategy = getattr(trainer, "strategy", None)
    if _REFUSED & {cls.__name__ for cls in type(strategy).__mro__}:
        raise ValueError(
            f"OrbitCoherenceMonitor does not measure {type(strategy).__name__}: it flattens the "
            "parameters of several layers into shards, so no rank sees a layer's own tensors. "
            "Shard with FSDP2 instead (lightning.pytorch.strategies.ModelParallelStrategy, "
            "applying torch.distributed.fsdp.fully_shard in configure_model), or train with DDP "
            "(strategy='ddp'); saved checkpoints can be measured with `symcoherence analyze`"
        )
    datamodule = getattr(trainer, "datamodule", None)
    declared = [
        g
        for g in (
            getattr(datamodule, name, None) for name in ("diagnostic_group", "symmetry_group")
        )
        if isinstance(g, Group)
    ]
    outside = [e for e in spec.measured_elements if declared and not any(e in g for g in declared)]
    if outside:
        rank_zero_warn(
            f"elements {outside} of group {spec.group.name} are not among the symmetries the "
            f"datamodule declares ({', '.join(g.name for g in declared)}); their statistics "
            "measure symmetries the data do not have"
        )


def check_resumed_probe(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    """Warn when the probe set drawn now is not the one a resumed checkpoint was measured on."""
    from lightning.pytorch.utilities import rank_zero_warn

    if stored is None or current is None or stored.get("sha256") == current.get("sha256"):
        return
    rank_zero_warn(
        f"the probe set differs from the one in the checkpoint (stored {stored}, now {current}): "
        "values after resuming are not comparable with earlier ones; resume with the same data, "
        "probe_split, probe_seed, probe_transform and probe_size"
    )


@contextlib.contextmanager
def configuring() -> Iterator[None]:
    """Report a ``ValueError``/``TypeError`` raised inside as a :class:`ConfigurationError`."""
    try:
        yield
    except ConfigurationError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"OrbitCoherenceMonitor: {error}") from error


__all__ = [
    "ConfigurationError",
    "check_resumed_probe",
    "check_run",
    "check_settings",
    "configuring",
]
