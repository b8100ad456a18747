"""Speed and memory of the orbit-influence engine under its memory budget, as ratios of one run.

Problems: the small U-Net at the quickstart's scale (32², N = 48) and the small U-Net and FNO
presets of ``symcoherence.models`` on 64² fields (N = 16), D4 (K = 8). With the default memory
budget (a quarter of the free memory, resolved once and printed in bytes):

* engine time (``orbit_influence``, identity metric, ``K·N`` per-sample gradients) ÷ one batched
  forward+backward over the same ``K·N`` transformed samples (target ≤ 1.3) and ÷ a naive
  per-sample loop of ``torch.autograd.grad`` reduced the same way (target ≤ 1.0);
* peak extra memory of the engine with ``chunk_size="auto"`` ÷ the budget (target ≤ 1), beside
  that of fixed chunk sizes and their times: auto's time ÷ the fastest fixed chunk whose peak
  stays within the budget (target ≤ 1.2);
* (the Gauss–Newton solvers' cost against this identity-metric engine is measured by
  ``benchmarks/bench_gauss_newton.py``).

Memory method: torch's CPU allocator keeps no peak statistic and ``tracemalloc`` does not see its
allocations, so every memory measurement runs in a fresh subprocess and reports the growth of the
process's peak resident set from just before the measured call (after model, data and a warm-up
engine call on two samples and two elements are in place: it loads the one-time machinery of
``torch.func``, which later firings do not pay again; the peak ``VmHWM`` is reset there through
``/proc/self/clear_refs``) to its peak during the call (``VmHWM`` in ``/proc/self/status``; not
``ru_maxrss``, which Linux carries over from the parent across ``exec``). This counts everything
the call touched at its peak, including allocator slack. Linux only.

Usage: ``python benchmarks/bench_coherence.py [--threads T] [--repeats R] [--problems ...]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from common import GROUP, KIND, build, status_kib

import symcoherence as sc
from symcoherence.coherence.gradients.memory import DEFAULT_MEMORY_FRACTION, resolve_memory_budget

# name -> (model, grid, probes)
PROBLEMS = {"quickstart": ("unet", 32, 48), "unet": ("unet", 64, 16), "fno": ("fno", 64, 16)}


def num_params(model) -> int:
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def engine(model, x, y, budget, chunk_size="auto"):
    return sc.orbit_influence(
        model, sc.smse, x, y, GROUP, KIND, chunk_size=chunk_size, max_memory=budget
    )


def batched_step(model, x, y):
    """One forward+backward over the K·N transformed samples (the cost of training on them)."""
    xs = GROUP.orbit(x, KIND).flatten(0, 1)
    ys = GROUP.orbit(y, KIND).flatten(0, 1)
    model.zero_grad(set_to_none=True)
    torch.func.vmap(sc.smse)(model(xs), ys).sum().backward()


def naive_loop(model, x, y):
    """Per-sample ``autograd.grad`` in a Python loop, reduced against the kets as the engine does."""
    params = list(model.parameters())

    def flat_grad(xn, yn):
        grads = torch.autograd.grad(sc.smse(model(xn[None])[0], yn), params)
        return torch.cat(
            [(torch.view_as_real(g) if g.is_complex() else g).reshape(-1) for g in grads]
        )

    kets = torch.stack([flat_grad(xn, yn) for xn, yn in zip(x, y, strict=True)])
    matrix = torch.empty(len(GROUP), len(x), len(x))
    for k, element in enumerate(GROUP.elements):
        gx, gy = GROUP.act_pair(element, x, y, KIND)
        for n in range(len(x)):
            matrix[k, n] = kets @ flat_grad(gx[n], gy[n])
    return matrix


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def chunk_arg(text: str):
    return text if text == "auto" else int(text)


def peak_rss_child(name: str, what: str, threads: int, budget: int) -> None:
    """Runs in a subprocess: print the growth of peak RSS over one measured call, in bytes.

    ``what`` is ``batched`` or ``engine:CHUNK`` (``CHUNK``: ``auto`` or a chunk size).
    """
    torch.set_num_threads(threads)
    kind_of_model, grid, num = PROBLEMS[name]
    model, x, y = build(kind_of_model, grid, num)
    kind, _, chunk = what.partition(":")
    sc.orbit_influence(model, sc.smse, x[:2], y[:2], GROUP, KIND, elements=GROUP.elements[:2])
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current resident set
    before = status_kib("VmRSS")
    if kind == "engine":
        engine(model, x, y, budget, chunk_size=chunk_arg(chunk))
    else:
        batched_step(model, x, y)
    print(json.dumps({"extra_bytes": (status_kib("VmHWM") - before) * 1024}))


def chunk_sweep(name: str, model, x, y, budget: int, args: argparse.Namespace) -> None:
    """Memory and time of ``chunk_size="auto"`` beside fixed chunk sizes (interleaved repeats)."""
    chunks = ["auto", *sorted({1, 4, 8, 16, len(x)})]
    # a fixed chunk may exceed the budget: give the fixed chunks all the memory there is
    roomy = max(budget, resolve_memory_budget(1.0, "cpu"))
    seconds = dict.fromkeys(chunks, float("inf"))
    for _ in range(args.repeats):
        for chunk in chunks:
            start = time.perf_counter()
            engine(model, x, y, budget if chunk == "auto" else roomy, chunk_size=chunk)
            seconds[chunk] = min(seconds[chunk], time.perf_counter() - start)
    extra = {chunk: peak_rss(name, f"engine:{chunk}", args.threads, budget) for chunk in chunks}
    within = [chunk for chunk in chunks[1:] if extra[chunk] <= budget]
    best = min(seconds[chunk] for chunk in within) if within else float("nan")
    chosen = engine(model, x, y, budget).info["chunk_size"]
    print("  chunk   peak extra ÷ budget      time   ÷ fastest fixed within the budget")
    for chunk in chunks:
        label = f"auto={chosen}" if chunk == "auto" else str(chunk)
        print(
            f"  {label:>8}   {extra[chunk] / budget:8.4f} ({extra[chunk] / 2**20:6.0f} MiB)  "
            f"{seconds[chunk]:6.2f} s   {seconds[chunk] / best:6.2f}"
            + ("" if chunk == "auto" or chunk in within else "   (over the budget)"),
            flush=True,
        )
    print("  (targets for auto: peak ÷ budget ≤ 1, time ÷ fastest fixed ≤ 1.2)", flush=True)


def peak_rss(name: str, what: str, threads: int, budget: int) -> int:
    command = [sys.executable, __file__, "--child", name, what]
    command += ["--threads", str(threads), "--budget", str(budget)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]


def report(name: str, budget: int, args: argparse.Namespace) -> None:
    kind_of_model, grid, num = PROBLEMS[name]
    model, x, y = build(kind_of_model, grid, num)
    params = num_params(model)
    print(f"\n{name}: {kind_of_model} {grid}², N = {num}, P = {params:,}", flush=True)
    t_engine = timed(lambda: engine(model, x, y, budget), args.repeats)
    t_batched = timed(lambda: batched_step(model, x, y), args.repeats)
    t_loop = timed(lambda: naive_loop(model, x, y), 1)
    print(f"  engine (identity, auto)     {t_engine:8.2f} s")
    print(
        f"  ÷ batched fwd+bwd (K·N)     {t_engine / t_batched:8.2f}   (target ≤ 1.3; {t_batched:.2f} s)"
    )
    print(
        f"  ÷ naive per-sample loop     {t_engine / t_loop:8.2f}   (target ≤ 1.0; {t_loop:.2f} s)",
        flush=True,
    )
    chunk_sweep(name, model, x, y, budget, args)
    extra_batched = peak_rss(name, "batched", args.threads, budget)
    print(f"    (batched fwd+bwd over K·N, for scale: {extra_batched / 2**20:.0f} MiB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--budget", type=int, help="memory budget in bytes (default: a quarter)")
    parser.add_argument("--child", nargs=2, metavar=("PROBLEM", "WHAT"))
    args = parser.parse_args()
    if args.child:
        peak_rss_child(*args.child, args.threads, args.budget)
        return
    torch.set_num_threads(args.threads)
    budget = args.budget or resolve_memory_budget(DEFAULT_MEMORY_FRACTION, "cpu")
    print(
        f"torch {torch.__version__}, {args.threads} threads, D4 K={len(GROUP)}, memory budget "
        f"{budget:,} bytes ({budget / 2**30:.2f} GiB, {DEFAULT_MEMORY_FRACTION} of the free memory)"
    )
    for name in args.problems:
        report(name, budget, args)


if __name__ == "__main__":
    main()
