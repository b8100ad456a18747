"""FSDP2 with a projection: the sharded model measured in place against a gathered replica.

Two processes on gloo (CPU, one thread each) shard a U-Net with ``fully_shard`` (every
convolution, normalization and Linear its own unit, then the root) and measure its orbit
influence with ``Projection(dim=2^16)`` two ways, each in a fresh pair of processes:

* **in place**: ``orbit_influence`` on the sharded model (layer hooks on the sharded layers, each
  layer projected as the backward completes it; FSDP gathers one unit at a time);
* **replica**: every rank gathers a plain copy of the model (what the monitor does without a
  projection), then measures that copy with the same projection.

Printed per way: peak extra resident memory per rank (``VmHWM`` growth over the call, reset
through ``/proc/self/clear_refs``, the gather included), seconds, and the largest ``|Δρ(g)|``
between the two ways (the same blocks and seed: rounding only). The model's full parameters in
float32 are printed beside them: what the replica must hold and the in-place way never does.
For scale, a **training step** (forward and backward of the ``N`` probes' summed loss, FSDP's
reduce-scatter included) is measured the same way: what FSDP itself takes per rank.

Heap: the worker processes run with ``MALLOC_MMAP_THRESHOLD_=65536``, so that glibc returns
every freed block over 64 KiB to the system and the resident set tracks live memory. With glibc's
default heap, the in-place way's thousands of per-unit gathers (two per unit per pass) leave
freed blocks in the heap and its resident peak reads several hundred MiB higher
(``--default-heap`` shows it).

Usage: ``python benchmarks/bench_fsdp.py [--width W] [--grid G] [--probes N] [--default-heap]``.
Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import status_kib

import symcoherence as sc
from symcoherence.coherence import Projection
from symcoherence.models import UNet2d

ELEMENTS = ["e", "r", "s", "sr"]
KIND = sc.FieldType(["pseudoscalar"])


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` on every layer that holds parameters, then on the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for module in list(model.modules())[1:]:
        if list(module.parameters(recurse=False)):
            fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def worker(rank: int, way: str, settings: dict, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from symcoherence.callbacks._sharded import plain_replica

    torch.manual_seed(0)
    model = UNet2d(1, 1, preset="paper", width=settings["width"]).eval()
    parameters = sum(p.numel() for p in model.parameters())
    model = shard(model)
    generator = torch.Generator().manual_seed(1)
    grid, num = settings["grid"], settings["probes"]
    x = torch.randn(num, 1, grid, grid, generator=generator)
    y = torch.randn(num, 1, grid, grid, generator=generator)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    if way == "training_step":
        torch.stack([sc.smse(p, t) for p, t in zip(model(x), y, strict=True)]).sum().backward()
        peak = status_kib("VmHWM") - before
        answer = {
            "seconds": time.perf_counter() - start,
            "peak_kib": peak,
            "parameters": parameters,
        }
        Path(out, f"{way}{rank}.json").write_text(json.dumps(answer))
        dist.destroy_process_group()
        return
    measured = plain_replica(model).eval() if way == "replica" else model
    result = sc.orbit_influence(
        measured,
        sc.smse,
        x,
        y,
        sc.groups.D4(),
        KIND,
        elements=ELEMENTS,
        projection=Projection(dim=2**16),
    )
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM") - before
    answer = {"ratio": result.ratio.tolist(), "seconds": seconds, "peak_kib": peak}
    answer["parameters"] = parameters
    Path(out, f"{way}{rank}.json").write_text(json.dumps(answer))
    dist.destroy_process_group()


def run(way: str, settings: dict, port: int, folder: str) -> list[dict]:
    mp.spawn(worker, args=(way, settings, port, folder), nprocs=2)
    return [json.loads(Path(folder, f"{way}{rank}.json").read_text()) for rank in range(2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=44, help="U-Net width (44: 25M parameters)")
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--default-heap", action="store_true", help="keep glibc's heap settings")
    settings = vars(parser.parse_args(argv))
    if not settings.pop("default_heap"):
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by the workers' glibc at start
    with tempfile.TemporaryDirectory() as folder:
        results = {
            way: run(way, settings, 29600 + index, folder)
            for index, way in enumerate(("in_place", "replica", "training_step"))
        }
    parameters = results["in_place"][0]["parameters"]
    print(
        f"U-Net width {settings['width']} ({parameters / 1e6:.1f}M parameters, "
        f"{parameters * 4 / 2**20:.0f} MiB in float32), {settings['grid']}², "
        f"N = {settings['probes']}, elements {ELEMENTS}, Projection(dim=2^16), 2 ranks on gloo, "
        f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'default')}"
    )
    for way, ranks in results.items():
        peaks = ", ".join(f"{r['peak_kib'] / 1024:.0f}" for r in ranks)
        seconds = max(r["seconds"] for r in ranks)
        print(f"  {way:13s} peak extra per rank {peaks} MiB, {seconds:.1f} s")
    difference = max(
        abs(a - b)
        for a, b in zip(
            results["in_place"][0]["ratio"], results["replica"][0]["ratio"], strict=True
        )
    )
    ratio = results["in_place"][0]["seconds"] / results["replica"][0]["seconds"]
    print(f"  in place ÷ replica time {ratio:.2f}; largest |Δρ| between the ways {difference:.1e}")


if __name__ == "__main__":
    sys.exit(main())
