"""Forward+backward throughput (samples/s) of each backbone preset, plus the group-averaged wrapper.

Usage::

    python benchmarks/bench_models.py                  # small presets at 64² on CPU
    python benchmarks/bench_models.py --paper          # also the paper presets
    python benchmarks/bench_models.py --grid 128 --device cuda --paper
    python benchmarks/bench_models.py --threads 1      # on a shared, loaded machine

One step is ``loss = mean(f(x)²); loss.backward()`` on a batch of ``--batch`` samples with
``--channels`` input and output channels. Reported: median seconds per step over ``--repeats``
timed steps after ``--warmup`` untimed ones, and samples/s. Compare numbers only within one run.
"""

import argparse
import statistics
import time

import torch

import symcoherence as sc
from symcoherence.models import FNO2d, GroupAveraged, UNet2d, ViT2d


def build(name, preset, channels, grid):
    if name == "UNet2d":
        return UNet2d(channels, channels, preset=preset)
    if name == "FNO2d":
        return FNO2d(channels, channels, preset=preset)
    if name == "ViT2d":
        return ViT2d(channels, channels, grid_size=grid, preset=preset)
    return GroupAveraged(
        UNet2d(channels, channels, preset=preset),
        sc.groups.D4(),
        sc.FieldType(["scalar"]).repeat(channels),
    )


def time_step(model, x, warmup, repeats, device):
    def step():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--paper", action="store_true", help="also time the paper presets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: torch default)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    presets = ["small", "paper"] if args.paper else ["small"]
    x = torch.randn(args.batch, args.channels, args.grid, args.grid, device=device)
    print(
        f"device={device} threads={torch.get_num_threads()} grid={args.grid}² batch={args.batch} "
        f"channels={args.channels}"
    )
    print(f"{'model':<30}{'params':>12}{'s/step':>10}{'samples/s':>12}")
    for preset in presets:
        for name in ("UNet2d", "FNO2d", "ViT2d", "GroupAveraged(UNet2d)"):
            model = build(name, preset, args.channels, args.grid).to(device)
            params = sum(p.numel() for p in model.parameters())
            seconds = time_step(model, x, args.warmup, args.repeats, device)
            label = f"{name}[{preset}]"
            print(f"{label:<30}{params:>12,}{seconds:>10.4f}{args.batch / seconds:>12.1f}")


if __name__ == "__main__":
    main()
