"""Cost and accuracy of the Gauss–Newton solvers, measured side by side in one run.

For the small U-Net and FNO presets of ``symcoherence.models`` on 64² fields, D4 (K = 8), N = 16,
float32, all at the default relative damping:

* the reference ``GaussNewton()`` (Nyström-preconditioned cg): iterations, Nyström rank, worst
  true relative residual (target ≤ 1e-3 in ≤ 40 iterations) and time ÷ the identity metric's
  (target ≤ 5);
* plain cg (``preconditioner=None``) capped at ``--cg-iters`` iterations: the residual it reaches;
* ``subspace`` (the Galerkin approximation): time ratio and its error against the reference,
  ``max|H_sub − H_ref| / max|H_ref|`` over all elements and for the identity row alone, and the
  largest change of a standard ratio ρ(g).

With ``--ekfac-cost``, instead: the Kronecker-factored metric's cost at N = 16 and N = 48
(``GaussNewton(solver="ekfac")``, both batches) ÷ the identity metric's (target for the orbit
batch ≤ 2; fastest of two runs each), its fit's stored bytes and the growth of the process's peak
resident set during the call (``VmHWM`` after a reset through ``/proc/self/clear_refs``; Linux).
Its accuracy against the exact reference: ``benchmarks/bench_ekfac.py``.

Usage: ``python benchmarks/bench_gauss_newton.py [--threads T] [--cg-iters I] [--models unet fno]
[--ekfac-cost]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from common import GRID, GROUP, KIND, N, build, status_kib

import symcoherence as sc
from symcoherence.coherence import GaussNewton


def run(model, x, y, metric) -> tuple[sc.OrbitInfluence, float, bool]:
    """One measurement: (result, seconds, whether the solver warned that it hit its cap)."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = sc.orbit_influence(model, sc.smse, x, y, GROUP, KIND, metric=metric)
    capped = any("max_iter" in str(w.message) for w in caught)
    return result, time.perf_counter() - start, capped


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def report(name: str, cg_iters: int) -> None:
    model, x, y = build(name)
    params = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    print(f"\n{name}: P = {params:,}", flush=True)
    run(model, x[:2], y[:2], "identity")  # warm-up
    _, t_identity, _ = run(model, x, y, "identity")
    print(f"  identity metric                 {t_identity:8.1f} s", flush=True)

    reference = GaussNewton()
    ref, t_ref, capped = run(model, x, y, reference)
    info = ref.info
    print(
        f"  GaussNewton() ÷ identity        {t_ref / t_identity:8.1f}   (target ≤ 5; {t_ref:.1f} s)\n"
        f"    α = {info['relative_damping']:g}, λ = {info['damping']:.3e}, "
        f"tr(η)/P = {info['trace_estimate'] / params:.3e}, Nyström rank "
        f"{info['preconditioner_rank']}\n"
        f"    iterations {info['solver_iterations']:4d}   (target ≤ 40)   relative residual "
        f"{info['solver_residual']:.2e}   (target ≤ 1e-3){'   HIT ITS CAP' if capped else ''}",
        flush=True,
    )

    plain = GaussNewton(preconditioner=None, max_iter=cg_iters)
    result, t_plain, capped = run(model, x, y, plain)
    print(
        f"  plain cg ÷ identity             {t_plain / t_identity:8.1f}   ({t_plain:.1f} s, "
        f"{result.info['solver_iterations']} iterations, relative residual "
        f"{result.info['solver_residual']:.2e}{', stopped at its cap' if capped else ''})",
        flush=True,
    )

    subspace = GaussNewton(solver="subspace")
    result, t_subspace, _ = run(model, x, y, subspace)
    identity = ref.elements.index(ref.identity)
    print(
        f"  subspace ÷ identity             {t_subspace / t_identity:8.1f}   ({t_subspace:.1f} s, "
        f"rank {result.info['subspace_rank']} of {result.info['subspace_columns']}, Galerkin "
        f"residual {result.info['solver_residual']:.2e})\n"
        f"    error vs reference: H {relative_error(result.matrix, ref.matrix):.2e}, "
        f"H^e {relative_error(result.matrix[identity], ref.matrix[identity]):.2e}, "
        f"max|Δρ| {float((result.ratio - ref.ratio).abs().max()):.3f}",
        flush=True,
    )


def peak_growth(model, x, y, metric) -> tuple[sc.OrbitInfluence, float, int]:
    """``(result, seconds, bytes)``: one measurement, its time and the growth of the peak RSS."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current resident set
    before = status_kib("VmRSS")
    result, seconds, _ = run(model, x, y, metric)
    return result, seconds, (status_kib("VmHWM") - before) * 1024


def ekfac_cost(name: str) -> None:
    """EK-FAC ÷ identity at N = 16 and 48, with its stored and peak extra bytes."""
    for n in (16, 48):
        model, x, y = build(name, num=n)
        run(model, x[:2], y[:2], "identity")  # warm-up
        metrics = {
            "identity": "identity",
            "EK-FAC, orbit batch": GaussNewton(solver="ekfac", batch="orbit"),
            "EK-FAC, probe batch": GaussNewton(solver="ekfac", batch="probes"),
        }
        best: dict[str, tuple[float, int, int]] = {}
        for _ in range(2):
            for label, metric in metrics.items():
                result, seconds, peak = peak_growth(model, x, y, metric)
                stored = int(result.info.get("ekfac_fit_bytes", 0))
                if label not in best or seconds < best[label][0]:
                    best[label] = (seconds, stored, peak)
        identity = best["identity"][0]
        print(f"\n{name}, N = {n}: identity {identity:.1f} s", flush=True)
        for label, (seconds, stored, peak) in list(best.items())[1:]:
            target = "  (target ≤ 2)" if "orbit" in label else ""
            print(
                f"  {label} ÷ identity {seconds / identity:6.2f}{target}   fit stores "
                f"{stored / 2**20:6.0f} MiB, peak extra {peak / 2**20:6.0f} MiB "
                f"(identity's {best['identity'][2] / 2**20:.0f} MiB)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cg-iters", type=int, default=40)
    parser.add_argument("--models", nargs="+", default=["unet", "fno"], choices=["unet", "fno"])
    parser.add_argument("--ekfac-cost", action="store_true", help="only EK-FAC's cost, N = 16, 48")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {GRID}², D4 K={len(GROUP)}, N={N}")
    for name in args.models:
        ekfac_cost(name) if args.ekfac_cost else report(name, args.cg_iters)


if __name__ == "__main__":
    main()
