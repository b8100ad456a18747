"""Overhead of OrbitCoherenceMonitor on a small CPU training run (ratios measured in one run).

Prints:
  * wall time with the monitor at its default settings (every epoch, 48 probes, D4, identity,
    overhead budget 5 %) / without it (target <= 1.08 over 1500 steps), and the same with the
    budget off;
  * wall time with the monitor present but never firing / without it (target <= 1.01);
  * one identity-metric firing ÷ one batched forward+backward over the same K·N transformed probe
    samples, the fastest of several of each (target <= 1.3);
  * the time a firing spends logging its scalars (about 130 keys for D4), before (``pl_module.log``
    per key into ``callback_metrics``, then the loggers) and after (the loggers in one call and
    ``callback_metrics`` in one update), beside ``log_dict`` of the headline keys only;
  * the time of one firing in units of one training step, for the metrics given with ``--metrics``
    (default: identity, adam and the subspace approximation; the Gauss–Newton reference,
    ``gauss_newton``, costs far more at N = 48 on a CPU: see ``bench_gauss_newton.py``).

Every training run is timed in a fresh process (after a short warm-up fit there): successive fits in
one process slow down (by 10–20 % over six 400-step fits on this machine), which would bias
whichever setting runs later. Two ways to time them:

* ``--side-by-side`` (the default): each setting runs at the same time as a run without the
  monitor, both on one thread, so that both see the same machine load (on a shared virtual machine
  the speed of one core drifts by ±20 % within minutes, more than the overhead measured); the ratio
  of a pair is the monitor's cost, and the median over repeats is printed with its range;
* ``--sequential``: the settings alternate on all threads, in a rotated order on each repeat;
  each ratio uses the fastest of its repeats.

The default run's monitor also reports its own clock: the seconds its firings took and the share
of the run they are (``OverheadBudget.overhead``), printed beside the wall-clock difference.

Run: ``python benchmarks/bench_callback.py [--metrics identity adam subspace gauss_newton]
[--steps 1500] [--repeats 2] [--settings default idle] [--sequential]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import TimedMonitor  # noqa: E402
from helpers.tiny import TinyData, TinyModule, trainer  # noqa: E402

import symcoherence as sc  # noqa: E402
from symcoherence.coherence import GaussNewton  # noqa: E402
from symcoherence.models import UNet2d  # noqa: E402

# The quickstart's scale: the small U-Net preset (0.28M parameters) on 32² fields, batch 16,
# epochs of 200 optimizer steps.
GRID, BATCH, STEPS_PER_EPOCH, STEPS, REPEATS = 32, 16, 200, 1500, 2


def module() -> TinyModule:
    torch.manual_seed(0)
    return TinyModule(UNet2d(1, 1, preset="small"), lr=1e-3)


def data() -> TinyData:
    return TinyData(n_train=BATCH * STEPS_PER_EPOCH, n_val=64, batch_size=BATCH, grid=GRID)


def run(callbacks, steps: int) -> float:
    fit = trainer(callbacks, max_steps=steps, max_epochs=-1, limit_val_batches=0)
    start = time.perf_counter()
    fit.fit(module(), datamodule=data())
    return time.perf_counter() - start


PROBES, GROUP = 48, sc.groups.D4()
METRICS = {
    "identity": "identity",
    "adam": "adam",
    "subspace": GaussNewton(solver="subspace"),
    "gauss_newton": "gauss_newton",
}


def batched_step_time() -> float:
    """Fastest of four forward+backward passes (the first warms up) over the K·N transformed probes."""
    model = module()
    x, y = data().probe_batch(PROBES)
    field_type = sc.FieldType(["scalar"])
    xs, ys = (GROUP.orbit(t, field_type).flatten(0, 1) for t in (x, y))
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model.loss_fn(model(xs), ys).mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def firing_time(metric) -> tuple[float, float]:
    """``(firing, step)`` seconds: the fastest of three firings after a first one (48 probes, D4,
    equivariance errors included) and the mean training step of the same run between them.

    The fastest, as for the batched pass it is compared with: on a shared machine the slower
    repeats measure the neighbours. The first firing also checks the hook engine and resolves
    the memory budget, which later firings do not repeat.
    """
    monitor = TimedMonitor(
        metric=metric, at_start=False, every_n_epochs=None, every_n_train_steps=8, max_overhead=None
    )
    steps = 32
    fit = trainer([monitor], max_epochs=1, limit_val_batches=0, limit_train_batches=steps)
    start = time.perf_counter()
    fit.fit(module(), datamodule=data())
    training = time.perf_counter() - start - sum(monitor.seconds)
    return min(monitor.seconds[1:]), training / steps


SETTINGS = {
    "without": list,
    "default": lambda: [sc.OrbitCoherenceMonitor()],
    "no budget": lambda: [sc.OrbitCoherenceMonitor(max_overhead=None)],
    "idle": lambda: [
        sc.OrbitCoherenceMonitor(at_start=False, every_n_epochs=None, every_n_train_steps=10**9)
    ],
}


def _before(trainer_, pl_module, scalars) -> None:
    """The logging of a firing before: ``pl_module.log`` per key, then every logger."""
    for key, value in scalars.items():
        pl_module.log(key, value, logger=False, sync_dist=False, batch_size=1)
    for logger in trainer_.loggers:
        logger.log_metrics(scalars, step=trainer_.global_step)


def _headline_log_dict(trainer_, pl_module, scalars) -> None:
    """The alternative: ``log_dict`` of the headline keys only, every key to the loggers."""
    headline = {k: v for k, v in scalars.items() if k.startswith("basin/")}
    pl_module.log_dict(headline, logger=False, sync_dist=False, batch_size=1)
    for logger in trainer_.loggers:
        logger.log_metrics(scalars, step=trainer_.global_step)


class _LoggingTimer(sc.OrbitCoherenceMonitor):
    """Fires once after step 2, then times each way of logging its scalars (repeated)."""

    def __init__(self):
        super().__init__(at_start=False, every_n_epochs=None, every_n_train_steps=2, probe_size=16)
        self.timings: dict[str, float] = {}

    def _log(self, trainer_, pl_module, result):
        scalars = super()._log(trainer_, pl_module, result)
        ways = {
            "before: pl_module.log per key": _before,
            "log_dict of the headline keys": _headline_log_dict,
            "after: loggers + one callback_metrics update": lambda t, m, s: self._emit(t, m, s),
        }
        for name, way in ways.items():
            times = []
            for _ in range(5):
                start = time.perf_counter()
                way(trainer_, pl_module, scalars)
                times.append(time.perf_counter() - start)
            self.timings[name] = min(times)
        self.timings["keys"] = len(scalars)
        return scalars


def logging_time(folder: str) -> dict[str, float]:
    """Seconds one firing spends logging its scalars, per way, into a TensorBoard logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    timer = _LoggingTimer()
    logger = TensorBoardLogger(folder, name="bench", default_hp_metric=False)
    trainer([timer], logger=logger, max_epochs=1, limit_val_batches=0, limit_train_batches=3).fit(
        module(), datamodule=data()
    )
    return timer.timings


def timed_run_child(setting: str, steps: int, threads: int | None) -> None:
    """Runs in a subprocess: a warm-up fit, then print the wall time of one training run.

    With a monitor, also its own clock: the seconds its firings took and their share of the run.
    """
    if threads:
        torch.set_num_threads(threads)
    # imports, thread pools and allocator caches are not the monitor's cost
    trainer([], max_epochs=1, limit_val_batches=0, limit_train_batches=20).fit(
        module(), datamodule=data()
    )
    callbacks = SETTINGS[setting]()
    seconds = run(callbacks, steps)
    own = {}
    if callbacks:
        budget = callbacks[0].budget
        own = {"monitor_seconds": budget.monitor_seconds, "overhead": budget.overhead}
    print(json.dumps({"seconds": seconds, **own}))


def start_run(setting: str, steps: int, threads: int | None = None) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", setting, "--steps", str(steps)]
    if threads:
        command += ["--threads", str(threads)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_run(process: subprocess.Popen) -> dict[str, float]:
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"a timed training run failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def sequential_ratios(names: list[str], steps: int, repeats: int) -> dict[str, list[dict]]:
    """Every setting on all threads, one after another in a rotated order; the fastest repeat."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            runs[name].append(finish_run(start_run(name, steps)))
    best = {name: min(values, key=lambda r: r["seconds"]) for name, values in runs.items()}
    return {
        name: [{**best[name], "ratio": best[name]["seconds"] / best["without"]["seconds"]}]
        for name in names
    }


def side_by_side_ratios(names: list[str], steps: int, repeats: int) -> dict[str, list[dict]]:
    """Each setting beside a run without the monitor, one thread each; one ratio per pair."""
    pairs: dict[str, list[dict[str, float]]] = {"without": []}
    for _ in range(repeats):
        for name in names[1:]:
            with_monitor, without = start_run(name, steps, 1), start_run("without", steps, 1)
            result, control = finish_run(with_monitor), finish_run(without)
            ratio = result["seconds"] / control["seconds"]
            pairs.setdefault(name, []).append({**result, "ratio": ratio, "control": control})
            pairs["without"].append({**control, "ratio": 1.0})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--metrics", nargs="+", default=["identity", "adam", "subspace"], choices=list(METRICS)
    )
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS)[1:], default=list(SETTINGS)[1:]
    )
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="time the settings one after another on all threads (default: side by side)",
    )
    parser.add_argument(
        "--logging-only", action="store_true", help="only time the logging of one firing"
    )
    args = parser.parse_args()
    if args.child:
        timed_run_child(args.child, args.steps, args.threads)
        return
    metrics = args.metrics
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        timings = logging_time(folder)
    print(f"logging one firing's {timings.pop('keys'):.0f} scalars (TensorBoard logger):")
    for name, seconds in timings.items():
        print(f"  {name:<46} {1e3 * seconds:7.1f} ms")
    if args.logging_only:
        return
    steps, names = args.steps, ["without", *dict.fromkeys(args.settings)]
    measure = sequential_ratios if args.sequential else side_by_side_ratios
    runs = measure(names, steps, args.repeats)
    without = min(r["seconds"] for r in runs["without"])
    step_time = without / steps
    how = "one after another, all threads" if args.sequential else "side by side, 1 thread each"
    print(
        f"training run ({how}): {steps} steps, {without:.2f} s without the monitor "
        f"({1e3 * step_time:.1f} ms/step)"
    )
    targets = {"default": "<= 1.08 over 1500 steps", "idle": "<= 1.01"}
    labels = {
        "default": "default settings (budget 5 %)",
        "no budget": "budget off (every epoch)",
        "idle": "present, never firing",
    }
    for name in names[1:]:
        ratios = sorted(r["ratio"] for r in runs[name])
        spread = f" (range {ratios[0]:.3f}–{ratios[-1]:.3f} over {len(ratios)})" * (len(ratios) > 1)
        target = f"  (target {targets[name]})" if name in targets else ""
        print(f"{labels[name] + ' / without:':<43}{statistics.median(ratios):.3f}{spread}{target}")
    for record in runs.get("default", []):
        control = record.get("control", runs["without"][0])
        print(
            f"  the default monitor's own clock: {record['monitor_seconds']:.1f} s of firings, "
            f"{100 * record['overhead']:.1f} % of the rest of the run; by wall clock "
            f"{record['seconds'] - control['seconds']:.1f} s more than without "
            f"({100 * (record['ratio'] - 1):.1f} %)"
        )
    firings = {name: firing_time(METRICS[name]) for name in dict.fromkeys(["identity", *metrics])}
    print(
        f"one identity firing / batched fwd+bwd over its K·N = {len(GROUP) * PROBES} samples: "
        f"{firings['identity'][0] / batched_step_time():.2f}  (target <= 1.3)"
    )
    for name in metrics:
        seconds, step = firings[name]
        print(f"one firing, {name:>12}: {seconds:.2f} s = {seconds / step:.0f} training steps")


if __name__ == "__main__":
    main()
