"""Helpers shared by the benchmark scripts: the small-preset problem, peak memory, a timed monitor."""

import time

import torch

import symcoherence as sc
from symcoherence.models import FNO2d, UNet2d

# the engine and solver benchmarks' problem: small presets on 64² fields, D4 (K = 8), N = 16
GRID, N, GROUP, KIND = 64, 16, sc.groups.D4(), sc.FieldType(["pseudoscalar"])


def build(name: str, grid: int = GRID, num: int = N):
    """``(model, x, y)``: the ``"unet"`` or ``"fno"`` small preset in eval mode, random probes.

    ``grid`` and ``num`` default to the 64², N = 16 problem; the quickstart's scale is 32², 48.
    """
    torch.manual_seed(0)
    model = {"unet": UNet2d, "fno": FNO2d}[name](1, 1, preset="small").eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(num, 1, grid, grid, generator=generator)
    y = torch.randn(num, 1, grid, grid, generator=generator)
    return model, x, y


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (e.g. ``VmRSS``, ``VmHWM``); Linux only."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; this memory method needs Linux")


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
