"""Overhead of OrbitCoherenceMonitor on a small CPU training run (ratios measured in one run).

Prints:
  * wall time with the monitor at its default schedule (once per epoch) / without it (target <= 1.05);
  * wall time with the monitor present but never firing / without it (target <= 1.01);
  * the time of one firing in units of one training step, for the identity metric and the
    Gauss–Newton metric with each solver.

Run: ``python benchmarks/bench_callback.py`` (from the repository root).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.tiny import TinyData, TinyModule, trainer  # noqa: E402
from timing import TimedMonitor  # noqa: E402

import symcoherence as sc  # noqa: E402
from symcoherence.coherence import GaussNewton  # noqa: E402
from symcoherence.models import UNet2d  # noqa: E402

# The quickstart's scale: the small U-Net preset (0.28M parameters) on 32² fields, batch 16,
# epochs of 200 optimizer steps.
GRID, BATCH, STEPS_PER_EPOCH, EPOCHS, REPEATS = 32, 16, 200, 2, 2


def module() -> TinyModule:
    torch.manual_seed(0)
    return TinyModule(UNet2d(1, 1, preset="small"), lr=1e-3)


def data() -> TinyData:
    return TinyData(n_train=BATCH * STEPS_PER_EPOCH, n_val=64, batch_size=BATCH, grid=GRID)


def run(callbacks) -> float:
    fit = trainer(callbacks, max_epochs=EPOCHS, limit_val_batches=0)
    start = time.perf_counter()
    fit.fit(module(), datamodule=data())
    return time.perf_counter() - start


def firing_time(metric) -> float:
    """Median wall time of one firing (48 probes, D4, equivariance errors included)."""
    monitor = TimedMonitor(metric=metric, every_n_epochs=None, every_n_train_steps=8)
    trainer([monitor], max_epochs=1, limit_val_batches=0, limit_train_batches=24).fit(
        module(), datamodule=data()
    )
    return statistics.median(monitor.seconds)


def main() -> None:
    steps = EPOCHS * STEPS_PER_EPOCH
    run([])  # warm-up: imports, thread pools and allocator caches are not the monitor's cost
    without = min(run([]) for _ in range(REPEATS))
    default = min(run([sc.OrbitCoherenceMonitor()]) for _ in range(REPEATS))
    idle = min(
        run([sc.OrbitCoherenceMonitor(every_n_epochs=None, every_n_train_steps=10**9)])
        for _ in range(REPEATS)
    )
    step_time = without / steps
    print(
        f"training run: {steps} steps, {without:.2f} s without the monitor ({1e3 * step_time:.1f} ms/step)"
    )
    print(
        f"default schedule (every epoch, 48 probes, D4) / without: {default / without:.3f}  (target <= 1.05)"
    )
    print(
        f"present, never firing / without:                      {idle / without:.3f}  (target <= 1.01)"
    )
    metrics = {
        "identity": "identity",
        "gauss_newton/subspace": GaussNewton(solver="subspace"),
        # conjugate gradients capped at 5 iterations (far from its tolerance at the default
        # damping): the cost of a few Jacobian products per right-hand side; 50 iterations took
        # over 15 minutes per firing at this scale
        "gauss_newton/cg (5 it.)": GaussNewton(solver="cg", max_iter=5),
    }
    for label, metric in metrics.items():
        seconds = firing_time(metric)
        print(
            f"one firing, {label:>24}: {seconds:.2f} s = {seconds / step_time:.0f} training steps"
        )


if __name__ == "__main__":
    main()
