"""The Lightning side of symcoherence: :class:`OrbitCoherenceMonitor` and its private parts.

The monitor decides *when* to measure and *where* numbers go; every number comes from
:func:`symcoherence.coherence.measure`. Private modules: ``_probes`` (the fixed probe set and the
checks of data against model), ``_firing`` (one measurement and its data-parallel work sharing),
``_isolation`` (a measurement leaves no trace on training), ``_distributed`` (collectives) and
``_tensorboard`` (what only TensorBoard shows).
"""

from symcoherence.callbacks.monitor import (
    ConfigurationError,
    MeasurementError,
    OrbitCoherenceMonitor,
)

__all__ = ["ConfigurationError", "MeasurementError", "OrbitCoherenceMonitor"]
