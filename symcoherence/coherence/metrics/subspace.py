r"""The subspace (Galerkin) Gauss–Newton solve: the authors' May construction, an approximation.

An orthonormal basis ``Q`` of the stacked ket and bra gradients (thin SVD, directions with
``σ_i² ≥ energy_cutoff · σ_1²``) and

.. math:: H^g[n, m] ≈ (Q^T b_n^g)^T (Q^T χ Q)^{-1} (Q^T a_m),

with ``Qᵀ χ Q`` formed from ``vmap(jvp)`` of the basis. It equals ``bᵀ χ⁻¹ a`` only when the
gradients span parameter space; otherwise it is a Galerkin approximation whose residual is
reported. The basis holds the bras of *every* measured element, so even the identity's row
changes with the element list; it holds ``(K + 1)·N·P`` numbers.

Example:
    >>> from symcoherence.coherence import GaussNewton
    >>> GaussNewton(damping=1e-3, solver="subspace").element_separable  # Q spans every element's bras
    False
"""

from __future__ import annotations

from typing import Any

import torch

from symcoherence.coherence.metrics.base import InfluenceProblem, Reduction
from symcoherence.coherence.metrics.cg import relative_residual
from symcoherence.coherence.metrics.linearized import GaussNewtonMatrix


def subspace_reduce(
    problem: InfluenceProblem,
    eta: GaussNewtonMatrix,
    damping: float,
    energy_cutoff: float,
    info: dict[str, Any],
) -> Reduction:
    r"""``H ≈ (Qᵀb)ᵀ (Qᵀ χ Q)⁻¹ (Qᵀa)`` on the span ``Q`` of the ket and bra gradients.

    Args:
        problem: the kets and the stream of bra blocks.
        eta: ``η = s JᵀJ`` on the probe (or orbit) batch.
        damping: ``λ`` of ``χ = η + λI``.
        energy_cutoff: keep the directions with ``σ_i² ≥ energy_cutoff · σ_1²``.
        info: the diagnostics so far; ``solver_residual`` (the kets' Galerkin residual
            ``‖a − χ Q (QᵀχQ)⁻¹ Qᵀa‖ / ‖a‖``), ``subspace_rank`` and ``subspace_columns`` are added.
    """
    kets = problem.kets
    num, k = kets.shape[0], problem.num_elements
    rows, placement = [kets], []
    offset = num
    for index, samples, block in problem.bra_blocks():
        rows.append(block)
        placement.append((index, samples, slice(offset, offset + block.shape[0])))
        offset += block.shape[0]
    stacked = torch.cat(rows)
    left, sigma, right = torch.linalg.svd(stacked, full_matrices=False)
    del stacked, rows
    keep = sigma.pow(2) >= energy_cutoff * sigma[0].pow(2)
    keep &= sigma > 0
    rank = int(keep.sum())
    coords = left[:, :rank] * sigma[:rank]  # G ≈ coords Qᵀ
    basis = right[:rank].contiguous()  # Qᵀ (r, P); svd returns a column-major Vᴴ
    del right
    jq = eta.linear.jvp(basis)  # (r, F)
    compressed = eta.scale * jq @ jq.T + damping * torch.eye(rank, dtype=jq.dtype, device=jq.device)
    factor = torch.linalg.cholesky(compressed)
    solved = torch.cholesky_solve(coords.T, factor)  # (r, R): (QᵀχQ)⁻¹ Qᵀg for every row g
    overlaps = coords @ solved[:, :num]  # (R, N): gᵀ Q (QᵀχQ)⁻¹ Qᵀ a_m
    self_overlaps = (coords * solved.T).sum(-1)  # (R,)
    # Galerkin residual of the kets: χ Q c = s Jᵀ((JQ)ᵀ c) + λ Q c with c = (QᵀχQ)⁻¹Qᵀa
    ket_coords = solved[:, :num].T  # (N, r)
    chi_solution = eta.scale * eta.linear.vjp(ket_coords @ jq) + damping * (ket_coords @ basis)
    matrix = kets.new_zeros(k, num, num)
    bra_self = kets.new_zeros(k, num)
    for index, samples, span in placement:
        matrix[index, samples] = overlaps[span]
        bra_self[index, samples] = self_overlaps[span]
    info.update(
        solver_residual=relative_residual(kets, chi_solution),
        subspace_rank=rank,
        subspace_columns=int(coords.shape[0]),
    )
    return Reduction(matrix, bra_self, self_overlaps[:num], info)


__all__ = ["subspace_reduce"]
