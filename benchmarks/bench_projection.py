"""Projected gradients: error of the coherence ratio, memory and time against the exact engine.

* Small presets (the U-Net and FNO of ``symcoherence.models`` on 64² fields, D4 K = 8, N = 16): the
  largest ``|Δρ(g)|`` over the elements at ``d = 2^16`` (the default ``2^20`` exceeds their
  parameter count and measures them exactly), with peak extra memory and time of both engines.
  The untrained FNO's gradients sit almost wholly in its output bias (kept exactly), so it is also
  measured over its spectral weights alone, which are count-sketched.
* A U-Net of over 10⁸ parameters (``UNet2d(preset="paper", width=88)``: 101M) on 32² fields, N = 8
  probes and elements ``e, r, s, sr``, on CPU: the exact engine and the projected one at
  ``d = 2^16`` and at the default ``2^20``, each with ``|Δρ|``, peak extra memory and seconds.
  The exact engine holds ``N·P`` numbers (3.2 GB) where the projected one holds ``N·d``.

Memory method: as in ``bench_coherence.py``, each measurement runs in a fresh subprocess and
reports the growth of the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
over the measured call, after model and data are in place and, for the small presets, a warm-up
call on two samples and two elements (``torch.func``'s one-time machinery, tens of MiB, would
otherwise dominate them). Linux only.

Usage: ``python benchmarks/bench_projection.py [--threads T] [--skip-large] [--large-width W]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from common import status_kib

import symcoherence as sc
from symcoherence.coherence import Projection
from symcoherence.coherence.gradients.projection import DEFAULT_DIM
from symcoherence.models import FNO2d, UNet2d

KIND = sc.FieldType(["pseudoscalar"])
SMALL = {"grid": 64, "probes": 16, "elements": None}
LARGE = {"grid": 32, "probes": 8, "elements": ["e", "r", "s", "sr"]}


def build(name: str, width: int):
    """Model, probes and measurement settings of one case."""
    torch.manual_seed(0)
    if name == "large":
        model, case = UNet2d(1, 1, preset="paper", width=width), LARGE
    else:
        model = {"unet": UNet2d, "fno": FNO2d, "fno-spectral": FNO2d}[name](1, 1, preset="small")
        case = SMALL
    generator = torch.Generator().manual_seed(1)
    shape = (case["probes"], 1, case["grid"], case["grid"])
    x, y = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    spectral = (lambda n, p: "spectral" in n) if name == "fno-spectral" else None
    kwargs = dict(group=sc.groups.D4(), field_type=KIND, elements=case["elements"])
    return model.eval(), x, y, dict(kwargs, parameter_filter=spectral)


def child(name: str, dim: int, threads: int, width: int) -> None:
    """Runs in a subprocess: one measurement (``dim`` 0: exact), printed as JSON."""
    torch.set_num_threads(threads)
    model, x, y, kwargs = build(name, width)
    projection = Projection(dim=dim) if dim else None
    if name != "large":
        warm = dict(kwargs, elements=["e", "r"])
        sc.orbit_influence(model, sc.smse, x[:2], y[:2], projection=projection, **warm)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current resident set
    before = status_kib("VmRSS")
    start = time.perf_counter()
    result = sc.orbit_influence(model, sc.smse, x, y, projection=projection, **kwargs)
    seconds = time.perf_counter() - start
    extra = (status_kib("VmHWM") - before) * 1024
    print(json.dumps({"ratio": result.ratio.tolist(), "seconds": seconds, "extra_bytes": extra}))


def measure(name: str, dim: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", name, str(dim)]
    command += ["--threads", str(args.threads), "--large-width", str(args.large_width)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name: str, dims: list[int], args: argparse.Namespace) -> None:
    model, x, y, kwargs = build(name, args.large_width)
    fmodel = sc.coherence.gradients.FunctionalModel(model, kwargs["parameter_filter"])
    params, probes = fmodel.layout.size, x.shape[0]
    kets = probes * params * 4
    del model, fmodel
    print(
        f"\n{name}: P = {params:,}, {x.shape[-1]}², N = {probes}, N·P·4 = {kets / 2**20:,.0f} MiB",
        flush=True,
    )
    exact = measure(name, 0, args)
    print(
        f"  exact            peak extra {exact['extra_bytes'] / 2**20:8,.0f} MiB  "
        f"{exact['seconds']:7.1f} s   ρ = {[round(r, 3) for r in exact['ratio']]}",
        flush=True,
    )
    reference = torch.tensor(exact["ratio"])
    for dim in dims:
        got = measure(name, dim, args)
        error = float((torch.tensor(got["ratio"]) - reference).abs().max())
        print(
            f"  d = {dim:<9,}    peak extra {got['extra_bytes'] / 2**20:8,.0f} MiB  "
            f"{got['seconds']:7.1f} s   max |Δρ| = {error:.4f}  (memory ÷ exact "
            f"{got['extra_bytes'] / exact['extra_bytes']:.3f}, time ÷ exact "
            f"{got['seconds'] / exact['seconds']:.2f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--large-width", type=int, default=88)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "DIM"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.threads, args.large_width)
        return
    print(f"torch {torch.__version__}, {args.threads} threads, default d = {DEFAULT_DIM:,}")
    for name in ("unet", "fno", "fno-spectral"):
        report(name, [2**16], args)
    if not args.skip_large:
        report("large", [2**16, DEFAULT_DIM], args)


if __name__ == "__main__":
    main()
