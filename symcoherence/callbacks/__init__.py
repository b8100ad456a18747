"""The Lightning side of symcoherence: :class:`OrbitCoherenceMonitor` and its private parts.

The monitor decides *when* to measure and *where* numbers go; every number comes from
:func:`symcoherence.coherence.measure`. Private modules, one concept each: ``_settings`` (argument
and run checks), ``_schedule`` (when it fires; the early schedule), ``_budget`` (the overhead
budget), ``_probes`` (the fixed probe set and the checks of data against model), ``_augmentation``
(probes as training sees them), ``_firing`` (one measurement and its data-parallel work sharing),
``_isolation`` (a measurement leaves no trace on training), ``_distributed`` (collectives),
``_timeline`` and ``_verdict`` (the verdict over training and in words) and ``_tensorboard`` (what
only TensorBoard shows).

:class:`EarlySchedule`, :class:`FiringSchedule` and :class:`Timeline` are small pure objects, so
that scripts can reproduce when the monitor fires and follow the verdict of their own
measurements.
"""

from symcoherence.callbacks._firing import MeasurementError
from symcoherence.callbacks._schedule import EarlySchedule, FiringSchedule
from symcoherence.callbacks._settings import ConfigurationError
from symcoherence.callbacks._timeline import Timeline
from symcoherence.callbacks.monitor import OrbitCoherenceMonitor

__all__ = [
    "ConfigurationError",
    "EarlySchedule",
    "FiringSchedule",
    "MeasurementError",
    "OrbitCoherenceMonitor",
    "Timeline",
]
