"""Timing helpers shared by the benchmark scripts."""

import time

import symcoherence as sc


class TimedMonitor(sc.OrbitCoherenceMonitor):
    """An ``OrbitCoherenceMonitor`` that records the wall time of every firing."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seconds: list[float] = []

    def measure(self, trainer, pl_module):
        start = time.perf_counter()
        result = super().measure(trainer, pl_module)
        self.seconds.append(time.perf_counter() - start)
        return result
