"""One monitor firing at paper scale: seconds, peak memory and overhead ratios, per metric.

Paper scale: the 13M-parameter U-Net (``UNet2d(preset="paper")``) on 128² velocity fields (a
vector, two channels), N = 48 probes, D4 (K = 8). For each metric — identity, the Gauss–Newton
reference (``"gauss_newton"``) and the paper's ``subspace`` approximation — it times one
:func:`symcoherence.coherence.measure` (what a firing computes), and beside it one training step
(forward + backward + AdamW step at batch 16), and prints

* seconds per firing and the firing ÷ training-step ratio (how many steps one firing costs),
* peak extra memory of the firing (CUDA: ``max_memory_allocated`` above the model and data; CPU:
  growth of the process's peak resident set, ``VmHWM``, reset before each measurement),
* the Gauss–Newton solver's iterations and residual.

Targets on one H100/H200 GPU: identity firing ≤ 5 s, Gauss–Newton ≤ 30 s, peak extra memory ≤ 20 GB.

    python benchmarks/paper_scale.py                 # full size, on CUDA when available
    python benchmarks/paper_scale.py --reduced       # seconds on a CPU (what the tests run)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import symcoherence as sc
from symcoherence.coherence import GaussNewton, MeasurementSpec, measure
from symcoherence.models import UNet2d


@dataclasses.dataclass(frozen=True)
class Scale:
    """The size of one run."""

    preset: str
    grid: int
    probes: int
    elements: tuple[str, ...] | None  # None: all of D4
    batch: int
    width: int | None = None  # None: the preset's


FULL = Scale("paper", 128, 48, None, 16)
REDUCED = Scale("small", 8, 3, ("e", "r"), 4, width=4)
METRICS = {
    "identity": "identity",
    "gauss_newton": "gauss_newton",
    "subspace": GaussNewton(solver="subspace"),
}


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator statistics, or the process's ``VmHWM``."""

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def _rss_peak() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = self._rss_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            # the kernel keeps the resident set in per-thread counters that it folds in lazily,
            # so a block that allocates nothing can read a few hundred KiB below its start
            self.bytes = max(self._rss_peak() - self.base, 0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step_seconds(model, x, y, device, repeats: int = 3) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.func.vmap(sc.smse)(model(x), y).mean().backward()
        optimizer.step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the first round warms up


def run(scale: Scale, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    sizes = {} if scale.width is None else {"width": scale.width, "depth": 1}
    model = UNet2d(2, 2, preset=scale.preset, **sizes).to(device)
    generator = torch.Generator().manual_seed(1)
    shape = (scale.probes, 2, scale.grid, scale.grid)
    x = torch.randn(shape, generator=generator).to(device)
    y = torch.randn(shape, generator=generator).to(device)
    batch = torch.randn(scale.batch, *shape[1:], generator=generator).to(device)
    step = training_step_seconds(model, batch, batch.roll(1, -1), device)
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    rows = []
    for name, metric in METRICS.items():
        spec = MeasurementSpec(
            group="D4", field_type=["vector"], elements=scale.elements, metric=metric
        )
        _synchronize(device)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            result = measure(model, sc.smse, x, y, spec)
            result.summary()
            _synchronize(device)
            seconds = time.perf_counter() - start
        info = result.influence.info
        rows.append(
            {
                "metric": name,
                "parameters": parameters,
                "seconds": seconds,
                "steps_per_firing": seconds / step,
                "peak_extra_gb": memory.bytes / 2**30,
                "training_step_s": step,
                "iterations": info.get("solver_iterations", info.get("cg_iterations", "")),
                "residual": info.get("solver_residual", info.get("cg_relative_residual", "")),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="small CPU-sized run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    scale = REDUCED if args.reduced else FULL
    device = torch.device(args.device)
    rows = run(scale, device)
    print(
        f"paper_scale ({'reduced' if args.reduced else 'full'}): UNet2d(preset={scale.preset!r}) "
        f"{rows[0]['parameters'] / 1e6:.2f}M parameters, {scale.grid}² velocity, N = "
        f"{scale.probes}, elements {scale.elements or 'all of D4'}, {device}"
    )
    print(f"training step (batch {scale.batch}): {rows[0]['training_step_s']:.3f} s")
    print(
        f"{'metric':<14}{'firing s':>10}{'÷ step':>10}{'peak extra GB':>15}{'iters':>7}{'residual':>11}"
    )
    for row in rows:
        residual = row["residual"]
        residual = f"{residual:.1e}" if isinstance(residual, float) else str(residual)
        print(
            f"{row['metric']:<14}{row['seconds']:>10.2f}{row['steps_per_firing']:>10.1f}"
            f"{row['peak_extra_gb']:>15.3f}{row['iterations']!s:>7}{residual:>11}"
        )
    return rows


if __name__ == "__main__":
    main()
