r"""The eigenvalue-corrected Kronecker-factored (EK-FAC) Gauss–Newton solve, and its preconditioner.

With the fitted block-diagonal ``η̃ ≈ η`` of :mod:`~symcoherence.coherence.metrics.kronecker`
(``η = JᵀJ/F``, the NTK metric), ``χ̃ = η̃ + λI`` is inverted block by block in the Kronecker
eigenbasis,

.. math::

    χ̃^{-1} \operatorname{vec}(M) = \operatorname{vec}\big(Q_G \,[(Q_G^T M Q_A) ⊘ (Λ + λ)]\, Q_A^T\big),

(dense blocks: ``Q diag(1/(e + λ)) Qᵀ``), at the cost of matrix products — no network passes.
``λ = α·tr(η̂)/P`` follows the reference's scale-free rule with the trace for free:
``tr(EK-FAC) = tr(η̂) = Σ w ‖g‖²``, the pseudo-gradients' Hutchinson estimate of ``tr(η)``.

As a preconditioner of the exact cg, ``χ̃⁻¹`` is symmetric positive definite for any ``λ > 0``.

Example:
    >>> import torch
    >>> from symcoherence.coherence.gradients import FunctionalModel
    >>> from symcoherence.coherence.metrics.kronecker import fit_curvature
    >>> net = torch.nn.Linear(3, 2)
    >>> curvature = fit_curvature(FunctionalModel(net), [torch.randn(1, 3)], 0.5, None)
    >>> chi = curvature.dense() + 0.1 * torch.eye(8, dtype=torch.float64)
    >>> v = torch.randn(2, 8, dtype=torch.float64)
    >>> torch.allclose(curvature.solve(v, 0.1) @ chi, v)
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from symcoherence.coherence.metrics.base import InfluenceProblem, Reduction, stream_reduce
from symcoherence.coherence.metrics.kronecker import KroneckerCurvature, fit_curvature


def fit_batches(problem: InfluenceProblem, batch: str) -> tuple[list[torch.Tensor], int]:
    """The input batches of ``η`` (the probes, or every measured element's ``g·x``) and ``K``."""
    if batch == "probes":
        return [problem.ket_inputs], 1
    if problem.orbit_inputs is None:
        raise ValueError(
            "batch='orbit' builds χ from the transformed probe inputs, but this "
            "InfluenceProblem has no orbit_inputs; use batch='probes'"
        )
    batches = list(problem.orbit_inputs())
    return batches, len(batches)


def fit(
    problem: InfluenceProblem,
    batch: str,
    output_scale: float | None,
    vectors: int | None,
    seed: int,
    correction: bool,
) -> tuple[KroneckerCurvature, dict[str, Any]]:
    """Fit ``η̃`` on the chosen batch; returns it with its cost diagnostics.

    ``E[v vᵀ] = s I`` with ``s = 1/F`` of all the batch's outputs (``output_scale / K`` for an
    explicit ``output_scale``), as :class:`~symcoherence.coherence.metrics.linearized.GaussNewtonMatrix`.
    """
    fmodel = problem.fmodel
    batches, count = fit_batches(problem, batch)
    with torch.no_grad():
        per_sample = fmodel(fmodel.params, batches[0][:1]).numel()
    outputs = per_sample * sum(b.shape[0] for b in batches)
    scale = 1.0 / outputs if output_scale is None else output_scale / count
    generator = torch.Generator(device=fmodel.device).manual_seed(seed)
    start = time.perf_counter()
    curvature = fit_curvature(fmodel, batches, scale, vectors, generator, correction)
    info = {
        "ekfac_fit_seconds": time.perf_counter() - start,
        "ekfac_fit_bytes": curvature.fit_bytes,
        "ekfac_passes": curvature.passes,
        "ekfac_layers": curvature.layers,
        "ekfac_dense_blocks": sum(block.columns.shape[0] for block in curvature.blocks),
    }
    return curvature, info


def preconditioner(
    curvature: KroneckerCurvature, damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``r ↦ χ̃⁻¹ r`` on rows ``(c, P)``, a preconditioner of the exact ``χ = η + λI``."""

    def apply(rows: torch.Tensor) -> torch.Tensor:
        return curvature.solve(rows, damping)

    return apply


def ekfac_reduce(
    problem: InfluenceProblem, curvature: KroneckerCurvature, damping: float, info: dict[str, Any]
) -> Reduction:
    """``H = bᵀ χ̃⁻¹ a`` with the fitted ``χ̃`` (bra self-overlaps are cheap, so always computed)."""
    reduced = stream_reduce(problem, lambda rows: curvature.solve(rows, damping), True)
    reduced.info = info
    return reduced


__all__ = ["ekfac_reduce", "fit", "fit_batches", "preconditioner"]
