"""Spherical shallow water and SFNO: generator speed and the cost of one monitor firing.

Prints (all numbers measured in this run, on this machine):
  * shallow-water generator throughput in solver steps per second, one trajectory at a time, at the
    default 32×64 grid and the larger 64×128 preset, with one intra-op thread (the solver's
    default) and with all of torch's default threads;
  * the time of one OrbitCoherenceMonitor firing on the SFNO "small" preset with the datamodule's
    diagnostic group (ZonalxEquator, 16 elements, 16 probes) in units of one training step, for the
    identity metric and the Gauss-Newton metric with the subspace solver (as in
    configs/sphere_sfno.yaml).

Run: ``python benchmarks/bench_sphere.py [--threads N]`` (from the repository root); ``--threads``
sets torch's intra-op threads for the training part (on a busy 2-core machine, 1 is steadier).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from common import TimedMonitor

from symcoherence.coherence import GaussNewton
from symcoherence.data import SphericalShallowWaterDataModule
from symcoherence.data.shallow_water import SphericalShallowWater
from symcoherence.models import SFNO, EmulatorModule

STEPS = 60
GRIDS = {"default 32x64": (32, 64, 600.0), "larger 64x128": (64, 128, 300.0)}


def steps_per_second(nlat: int, nlon: int, dt: float, threads: int | None) -> float:
    solver = SphericalShallowWater(nlat, nlon, dt, threads=threads)
    state = solver.initial_condition("random", seed=0)
    solver.step(state, 5)  # warm-up
    start = time.perf_counter()
    solver.step(state, STEPS)
    return STEPS / (time.perf_counter() - start)


class StepTimer(L.Callback):
    """Records the wall time of every training step (forward, backward, optimizer)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._start)


def firing(metric: str | GaussNewton, cache_dir: str) -> tuple[float, float]:
    """Median firing time and median training-step time (seconds) in one run."""
    data = SphericalShallowWaterDataModule(
        num_trajectories=64, val_fraction=0.25, cache_dir=cache_dir, progress=False
    )
    torch.manual_seed(0)
    module = EmulatorModule(SFNO(data.in_channels, data.out_channels, preset="small"))
    monitor = TimedMonitor(metric=metric, probe_size=16, every_n_epochs=None, every_n_train_steps=8)
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=25,
        callbacks=[monitor, timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    fired = set(range(7, 25, 8))  # the step timer includes firings at global steps 8, 16, 24
    plain = [s for i, s in enumerate(timer.seconds) if i not in fired and i > 0]
    return statistics.median(monitor.seconds), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    threads = parser.parse_args().threads
    machine = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    for label, (nlat, nlon, dt) in GRIDS.items():
        single = steps_per_second(nlat, nlon, dt, threads=1)
        default = steps_per_second(nlat, nlon, dt, threads=machine)
        print(
            f"shallow water {label} (dt={dt:.0f} s): {single:7.0f} steps/s with 1 thread, "
            f"{default:7.0f} steps/s with {machine} threads",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as cache_dir:
        for label, metric in (
            ("identity", "identity"),
            ("gauss_newton/subspace", GaussNewton(solver="subspace")),
        ):
            seconds, step = firing(metric, cache_dir)
            print(
                f"SFNO small, ZonalxEquator (16 elements, 16 probes), {label}: one firing "
                f"{seconds:.2f} s = {seconds / step:.0f} training steps ({1e3 * step:.0f} ms/step)",
                flush=True,
            )


if __name__ == "__main__":
    main()
