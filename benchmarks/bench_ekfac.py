"""Accuracy and cost of the Kronecker-factored Gauss–Newton metric against the exact cg reference.

For the small U-Net and FNO presets on 64² fields (``benchmarks/common.py``), D4 (K = 8), float32,
at the default relative damping, for both batches (``"probes"``, ``"orbit"``):

* the exact reference ``GaussNewton(batch=...)`` (Nyström-preconditioned cg) and
  ``GaussNewton(solver="ekfac", batch=...)`` (and K-FAC, ``correction=False``) side by side:
  time ÷ the identity metric's, the fit's stored bytes, and against the reference the Spearman
  correlation of the entries of ``H``, the relative Frobenius error of ``H``, per-element
  distribution transfer ``τ`` with its 90 % interval, and the fraction of elements with the same
  verdict (interval below 0.5) — target ≥ 95 %;
* iterations of the exact cg to a relative residual of 1e-3 under the Nyström and the EK-FAC
  preconditioner (target ≤ 40).

The FNO's spectral convolution has one dense block per retained mode (registered by
``symcoherence.models.fno``). Usage:
``python benchmarks/bench_ekfac.py [--threads T] [--n N] [--models unet fno] [--batches probes orbit]
[--preconditioners-only]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from common import GRID, GROUP, KIND, build

import symcoherence as sc
from symcoherence.coherence import GaussNewton


def run(model, x, y, metric) -> tuple[sc.OrbitInfluence, float]:
    """One measurement: (result, seconds)."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sc.orbit_influence(model, sc.smse, x, y, GROUP, KIND, metric=metric)
    return result, time.perf_counter() - start


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of the entries of two tensors (no ties expected)."""
    ranks = [t.reshape(-1).double().argsort().argsort().double() for t in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] @ ranks[1]) / (ranks[0].norm() * ranks[1].norm()))


def verdicts(result: sc.OrbitInfluence) -> dict[str, tuple[float, float, float, bool]]:
    """``{element: (τ, τ_lo, τ_hi, flagged)}`` for ``g ≠ e`` (flagged: interval below 0.5)."""
    rows = result.summarize().elements
    return {
        row.element: (row.transfer, row.transfer_lo, row.transfer_hi, row.transfer_hi < 0.5)
        for row in rows
        if row.element != result.identity
    }


def compare(name: str, result, seconds, reference, t_identity) -> None:
    """Print one approximation's cost and its accuracy against ``reference``."""
    error = float((result.matrix - reference.matrix).norm() / reference.matrix.norm())
    mine, theirs = verdicts(result), verdicts(reference)
    same = sum(mine[g][3] == theirs[g][3] for g in mine) / len(mine)
    print(
        f"    {name:24s} ÷ identity {seconds / t_identity:6.2f}   fit "
        f"{result.info.get('ekfac_fit_bytes', 0) / 2**20:7.1f} MiB   Spearman(H) "
        f"{spearman(result.matrix, reference.matrix):.3f}   ‖ΔH‖_F/‖H‖_F {error:.3f}   "
        f"same verdict {100 * same:.0f} %",
        flush=True,
    )
    cells = [
        f"{g}: {mine[g][0]:.2f} [{mine[g][1]:.2f}, {mine[g][2]:.2f}] vs "
        f"{theirs[g][0]:.2f} [{theirs[g][1]:.2f}, {theirs[g][2]:.2f}]"
        for g in mine
    ]
    print("      τ (approx vs exact): " + "; ".join(cells), flush=True)


def report(name: str, n: int, batches: list[str], preconditioners_only: bool) -> None:
    model, x, y = build(name)
    x, y = x[:n], y[:n]
    params = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    print(f"\n{name}: P = {params:,}, N = {n}", flush=True)
    run(model, x[:2], y[:2], "identity")  # warm-up
    _, t_identity = run(model, x, y, "identity")
    print(f"  identity metric {t_identity:.1f} s", flush=True)
    for batch in batches:
        if not preconditioners_only:
            compare_with_reference(model, x, y, batch, t_identity)
        for preconditioner in ("nystrom", "ekfac"):
            metric = GaussNewton(batch=batch, preconditioner=preconditioner, tol=1e-3)
            result, seconds = run(model, x, y, metric)
            print(
                f"    batch={batch}, cg to 1e-3, {preconditioner:8s} preconditioner: "
                f"{result.info['solver_iterations']:4d} iterations (target ≤ 40), residual "
                f"{result.info['solver_residual']:.1e}, ÷ identity {seconds / t_identity:.1f}",
                flush=True,
            )


def compare_with_reference(model, x, y, batch: str, t_identity: float) -> None:
    """The exact cg (to 1e-4) beside EK-FAC, EK-FAC with 4 vectors and K-FAC."""
    reference, t_ref = run(model, x, y, GaussNewton(batch=batch, tol=1e-4, max_iter=300))
    info = reference.info
    print(
        f"  batch={batch}: exact cg ÷ identity {t_ref / t_identity:.1f} "
        f"({info['solver_iterations']} iterations, residual {info['solver_residual']:.1e})",
        flush=True,
    )
    for label, metric in (
        ("EK-FAC", GaussNewton(solver="ekfac", batch=batch)),
        ("EK-FAC, 4 vectors", GaussNewton(solver="ekfac", batch=batch, random_vectors=4)),
        ("K-FAC", GaussNewton(solver="ekfac", batch=batch, correction=False)),
    ):
        result, seconds = run(model, x, y, metric)
        compare(label, result, seconds, reference, t_identity)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["unet", "fno"], choices=["unet", "fno"])
    parser.add_argument("--batches", nargs="+", default=["probes", "orbit"])
    parser.add_argument(
        "--preconditioners-only",
        action="store_true",
        help="only the cg iterations to 1e-3 under each preconditioner (no exact reference)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {GRID}², D4 K={len(GROUP)}")
    for name in args.models:
        report(name, args.n, args.batches, args.preconditioners_only)


if __name__ == "__main__":
    main()
