r"""The damped Gauss–Newton (NTK) metric, applied matrix-free (DESIGN §1.2).

.. math::

    χ = s \sum_m J_m^T J_m + λ I, \qquad J_m = ∂ f_θ(x_m) / ∂θ, \qquad s = 1/F \text{ by default},

over the *untransformed* probe batch, with ``F`` the number of scalar outputs ``f_θ(x_{1..N})``.
``J`` and ``χ`` are never formed: ``J v`` is a ``jvp`` and ``Jᵀ u`` a ``vjp`` of the batched
forward, both vmapped over many vectors. Two solvers give ``χ⁻¹``:

* ``"cg"``: conjugate gradients on ``χ y = v``, batched over right-hand sides, stopped when every
  column reaches ``‖v − χ y‖ ≤ tol·‖v‖`` or after ``max_iter`` products. The iterations used and
  the worst true relative residual are reported in ``info`` (``cg_iterations``,
  ``cg_relative_residual``). The metric depends only on the model and the ket inputs, so results
  for disjoint element subsets combine exactly.
* ``"subspace"``: stack all ket and bra gradients as rows of ``G`` (``R × P``), take the thin SVD
  ``G = U Σ Vᵀ`` and keep the ``r`` directions with ``σ_i² ≥ energy_cutoff · σ_1²`` as an
  orthonormal basis ``Q = V_{:r}``; compute ``JQ`` with ``vmap(jvp)``, form the ``r × r``
  compressed metric ``Qᵀ χ Q = s (JQ)ᵀ(JQ) + λ I`` exactly and invert it there:
  ``H = (Qᵀb)ᵀ (Qᵀ χ Q)⁻¹ (Qᵀa)``. This is **exact within the gradient subspace** (a Galerkin
  approximation of ``χ⁻¹``), not the full inverse; it equals ``bᵀ χ⁻¹ a`` when the gradients span
  parameter space. It holds ``R·P`` numbers, and the basis depends on the bras, so results for
  different element subsets do not combine (``element_separable`` is ``False``).

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.coherence import GaussNewton
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    >>> result = sc.orbit_influence(net, sc.smse, x, y, sc.groups.C4(), sc.FieldType(["scalar"]),
    ...                             metric=GaussNewton(solver="subspace"))
    >>> result.info["subspace_rank"] <= 10
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vjp, vmap

from symcoherence.coherence.metrics import InfluenceProblem, Metric, Reduction, stream_reduce
from symcoherence.coherence.per_sample import FunctionalModel

SOLVERS = ("cg", "subspace")
# Products with many vectors are vmapped in row chunks: one call sees at most this many samples
# (vectors × probe batch), which bounds the activation memory of the batched jvp / vjp.
SAMPLES_PER_CALL = 64


class LinearizedModel:
    """``J v`` and ``Jᵀ u`` of the batched forward ``θ ↦ f_θ(inputs)`` at the current ``θ``.

    Args:
        fmodel: the functional model.
        inputs: the batch ``(N, C, H, W)`` the Jacobian is taken on.
    """

    def __init__(self, fmodel: FunctionalModel, inputs: torch.Tensor):
        self.fmodel = fmodel

        def forward(params):
            return fmodel(params, inputs)

        self._forward = forward
        outputs, self._vjp = vjp(forward, fmodel.params)
        self.output_shape = outputs.shape
        self.batch_size = inputs.shape[0]
        self.num_outputs = outputs.numel()

    def _rows(self, total: int) -> list[slice]:
        """Row chunks so that one vmapped call sees at most ``SAMPLES_PER_CALL`` batched samples."""
        step = max(1, SAMPLES_PER_CALL // max(self.batch_size, 1))
        return [slice(start, min(start + step, total)) for start in range(0, total, step)]

    def jvp(self, vectors: torch.Tensor) -> torch.Tensor:
        """``J v`` for rows ``v`` of ``(c, P)`` -> ``(c, F)``."""

        def one(tangent):
            return jvp(self._forward, (self.fmodel.params,), (tangent,))[1].reshape(-1)

        batched = vmap(one)
        return torch.cat(
            [
                batched(self.fmodel.layout.unflatten(vectors[rows]))
                for rows in self._rows(len(vectors))
            ]
        )

    def vjp(self, cotangents: torch.Tensor) -> torch.Tensor:
        """``Jᵀ u`` for rows ``u`` of ``(c, F)`` -> ``(c, P)``."""
        batched = vmap(lambda u: self._vjp(u)[0])
        return torch.cat(
            [
                self.fmodel.layout.flatten(
                    batched(cotangents[rows].reshape(-1, *self.output_shape))
                )
                for rows in self._rows(len(cotangents))
            ]
        )


class GaussNewton(Metric):
    r"""Damped Gauss–Newton metric ``χ = s JᵀJ + λ I`` (see the module docstring).

    Args:
        damping: ``λ > 0``.
        solver: ``"cg"`` (matrix-free, exact to ``tol``) or ``"subspace"`` (Galerkin, exact within
            the span of the gradients).
        tol: ``cg`` relative-residual tolerance per right-hand side.
        max_iter: ``cg`` iteration cap.
        energy_cutoff: ``subspace`` keeps directions with ``σ_i² ≥ energy_cutoff · σ_1²``.
        output_scale: ``s``; ``None`` means ``1/F`` (``F`` scalar outputs on the probe batch).

    Example:
        >>> GaussNewton(solver="subspace").element_separable
        False
    """

    name = "gauss_newton"

    def __init__(
        self,
        damping: float = 1e-4,
        solver: str = "cg",
        tol: float = 1e-4,
        max_iter: int = 500,
        energy_cutoff: float = 1e-12,
        output_scale: float | None = None,
    ):
        if solver not in SOLVERS:
            raise ValueError(
                f"unknown Gauss–Newton solver {solver!r}; expected one of {list(SOLVERS)}"
            )
        if not damping > 0:
            raise ValueError(f"damping λ must be > 0 (χ must be invertible), got {damping!r}")
        if not tol > 0 or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(
                f"need tol > 0 and an integer max_iter >= 1, got tol={tol!r}, max_iter={max_iter!r}"
            )
        if not 0 <= energy_cutoff < 1:
            raise ValueError(f"energy_cutoff must be in [0, 1), got {energy_cutoff!r}")
        if output_scale is not None and not output_scale > 0:
            raise ValueError(
                f"output_scale must be > 0 or None (meaning 1/F), got {output_scale!r}"
            )
        self.damping = float(damping)
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = max_iter
        self.energy_cutoff = float(energy_cutoff)
        self.output_scale = output_scale
        self.element_separable = solver == "cg"

    def __repr__(self) -> str:
        return (
            f"GaussNewton(damping={self.damping}, solver={self.solver!r}, tol={self.tol}, "
            f"max_iter={self.max_iter}, energy_cutoff={self.energy_cutoff}, "
            f"output_scale={self.output_scale})"
        )

    def reduce(self, problem: InfluenceProblem) -> Reduction:
        """Reduce with ``χ⁻¹`` from the chosen solver."""
        linear = LinearizedModel(problem.fmodel, problem.ket_inputs)
        scale = self.output_scale if self.output_scale is not None else 1.0 / linear.num_outputs
        if self.solver == "subspace":
            return self._subspace(problem, linear, scale)

        def matvec(vectors: torch.Tensor) -> torch.Tensor:
            return scale * linear.vjp(linear.jvp(vectors)) + self.damping * vectors

        info = {"cg_iterations": 0, "cg_relative_residual": 0.0}

        def solve(vectors: torch.Tensor) -> torch.Tensor:
            solution, iterations, residual = batched_cg(matvec, vectors, self.tol, self.max_iter)
            info["cg_iterations"] = max(info["cg_iterations"], iterations)
            info["cg_relative_residual"] = max(info["cg_relative_residual"], residual)
            return solution

        reduced = stream_reduce(problem, solve, problem.need_bra_self)
        reduced.info = info
        return reduced

    def _subspace(
        self, problem: InfluenceProblem, linear: LinearizedModel, scale: float
    ) -> Reduction:
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
        keep = sigma.pow(2) >= self.energy_cutoff * sigma[0].pow(2)
        keep &= sigma > 0
        rank = int(keep.sum())
        coords = left[:, :rank] * sigma[:rank]  # G ≈ coords Qᵀ, Q = right[:rank]ᵀ
        jq = linear.jvp(right[:rank])  # (r, F)
        del right
        compressed = scale * jq @ jq.T + self.damping * torch.eye(
            rank, dtype=jq.dtype, device=jq.device
        )
        factor = torch.linalg.cholesky(compressed)
        solved = torch.cholesky_solve(coords.T, factor)  # (r, R): (QᵀχQ)⁻¹ Qᵀg for every row g
        overlaps = coords @ solved[:, :num]  # (R, N): gᵀ Q (QᵀχQ)⁻¹ Qᵀ a_m
        self_overlaps = (coords * solved.T).sum(-1)  # (R,)
        matrix = kets.new_zeros(k, num, num)
        bra_self = kets.new_zeros(k, num)
        for index, samples, span in placement:
            matrix[index, samples] = overlaps[span]
            bra_self[index, samples] = self_overlaps[span]
        info = {"subspace_rank": rank, "subspace_columns": int(coords.shape[0])}
        return Reduction(matrix, bra_self, self_overlaps[:num], info)


def batched_cg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, int, float]:
    r"""Conjugate gradients for ``A y_i = v_i`` with ``A`` symmetric positive definite, per row.

    Args:
        matvec: ``(c, P) -> (c, P)``, rows mapped by ``A``.
        rhs: right-hand sides as rows ``(c, P)``.
        tol: stop a row once ``‖v − A y‖ ≤ tol ‖v‖`` (recurrence residual).
        max_iter: at most this many products with ``A``.

    Returns:
        ``(y, iterations, worst true relative residual ‖v − A y‖/‖v‖ over rows)``; zero rows give
        zero solutions and residual 0.
    """
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rs = residual.pow(2).sum(-1)
    norm = rs.sqrt()
    scale = torch.where(norm > 0, norm, torch.ones_like(norm))
    iterations = 0
    while iterations < max_iter:
        done = rs.sqrt() <= tol * norm
        if bool(done.all()):
            break
        product = matvec(direction)
        iterations += 1
        curvature = (direction * product).sum(-1)
        alpha = torch.where(done, 0.0, rs / torch.where(done, 1.0, curvature))
        solution += alpha[:, None] * direction
        residual -= alpha[:, None] * product
        rs_new = residual.pow(2).sum(-1)
        beta = torch.where(done, 0.0, rs_new / torch.where(rs > 0, rs, 1.0))
        direction = residual + beta[:, None] * direction
        rs = torch.where(done, rs, rs_new)
    true = (rhs - matvec(solution)).norm(dim=-1) / scale
    return solution, iterations, float(true.max()) if true.numel() else 0.0


__all__ = ["GaussNewton", "LinearizedModel", "batched_cg"]
