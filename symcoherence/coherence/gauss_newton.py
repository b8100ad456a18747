r"""The damped Gauss–Newton (NTK) metric, applied matrix-free.

.. math::

    χ = η + λI, \qquad η = \frac{1}{F} \sum_m J_m^T J_m, \qquad J_m = ∂ f_θ(x_m) / ∂θ,

over the *untransformed* probe batch ``x_1..x_N``, with ``F`` the number of scalar outputs
``f_θ(x_{1..N})`` and ``P`` the number of (real) parameters. This is the NTK metric ``JᵀJ`` (the
Gauss–Newton matrix of a plain squared error), not the Gauss–Newton matrix of the scaled loss.
``J`` and ``χ`` are never formed: ``J v`` is a ``jvp`` and ``Jᵀ u`` a ``vjp`` of the batched
forward, both vmapped over many vectors.

**Damping.** By default ``λ`` is scale-free: ``λ = α · tr(η) / P`` with ``α = relative_damping``
(relative to the mean eigenvalue of ``η``; the default ``α = 10⁻²`` is the largest at which the
ratios of small trained CNNs stay within their bootstrap intervals of the small-``α`` limit, see
``benchmarks/study_damping.py``). ``tr(η)`` is a seeded estimate: the trace of a rank-16
randomized Nyström approximation ``η̂`` plus Hutchinson's estimate of ``tr(η − η̂)`` from a few
Rademacher vectors ``v`` (``vᵀηv = ‖J v‖²/F``, ``jvp`` only), which removes the dominant
eigenvalues from the estimator's variance. Multiplying the model's outputs and the targets by
``c`` scales ``η`` and ``λ`` alike, so the normalized influence does not change. The papers'
absolute conventions are reachable for reproduction:

* January: ``χ = JᵀJ + 10⁻⁴ I`` (no ``1/F``): ``GaussNewton(damping=1e-4, output_scale=1.0)``;
* May: ``χ = JᵀJ/F + 10⁻⁶ I``: ``GaussNewton(damping=1e-6)``.

**Batch.** ``batch="probes"`` (the papers') builds ``η`` on the untransformed probes. The identity
element's bras are then the very gradients whose Jacobians ``χ`` whitens, so its row is privileged
against every other element's. ``batch="orbit"`` builds ``χ_G = (1/K) Σ_g η(g·x) + λI`` over the
transformed probes of every measured element (identity included when measured), which treats all
elements alike; it costs ``K`` times the products and the activation memory, and depends on the
element list (so results for different element subsets do not combine).

**Solvers.**

* ``"cg"`` (the reference): conjugate gradients on ``χ y = a``, batched over the ``N`` ket
  right-hand sides and preconditioned by a randomized Nyström approximation of ``η`` whose rank
  doubles from 16 until its error is below ``10 λ`` or it reaches ``max_rank`` (see
  :mod:`~symcoherence.coherence.nystrom`). ``χ⁻¹ a`` is computed once and every streamed bra block
  meets it in a ``(c, N)`` product, so memory holds ``O((N + r)·P)`` numbers (about ``6N + 3r``
  vectors of length ``P``), never the ``K·N`` bras. A solve that stops at ``max_iter`` before ``tol`` warns (``RuntimeWarning``) and
  reports its residual; ``preconditioner=None`` runs plain cg. In float32 the products carry
  rounding errors of up to about ``10⁻⁷ ‖η‖``: a ``λ`` near that cannot be solved to a small
  residual, and the reported residual says so.
* ``"subspace"`` (the authors' May construction, a Galerkin approximation): an orthonormal basis
  ``Q`` of the stacked ket and bra gradients (thin SVD, directions with
  ``σ_i² ≥ energy_cutoff · σ_1²``), ``H = (Qᵀb)ᵀ (Qᵀ χ Q)⁻¹ (Qᵀa)`` with ``Qᵀ χ Q`` formed from
  ``vmap(jvp)`` of the basis. It equals ``bᵀ χ⁻¹ a`` only when the gradients span parameter space;
  otherwise it is an approximation whose residual ``‖a − χ Q (QᵀχQ)⁻¹ Qᵀa‖ / ‖a‖`` is reported.
  The basis holds the bras of *every* measured element, so even the identity's row changes with
  the element list; it holds ``(K + 1)·N·P`` numbers.

``Reduction.info`` carries ``damping`` (``λ``), ``relative_damping`` (``α``, ``None`` for an
absolute ``damping``), ``trace_estimate`` (``tr(η)``), ``solver_residual`` (worst true relative
residual ``‖a − χ y‖ / ‖a‖`` over the solves), ``solver_iterations`` (most iterations of a solve)
and ``preconditioner_rank`` (``r``; 0 without one); ``subspace`` adds ``subspace_rank`` and
``subspace_columns``.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.coherence import GaussNewton
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    >>> result = sc.orbit_influence(net, sc.smse, x, y, sc.groups.C4(), sc.FieldType(["scalar"]),
    ...                             metric=GaussNewton())
    >>> result.info["solver_residual"] <= 1e-3, result.info["relative_damping"]
    (True, 0.01)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.func import jvp, vjp, vmap

from symcoherence.coherence.metrics import InfluenceProblem, Metric, Reduction, stream_reduce
from symcoherence.coherence.nystrom import INITIAL_RANK, NystromSketch, trace_estimate
from symcoherence.coherence.per_sample import FunctionalModel

SOLVERS = ("cg", "subspace")
PRECONDITIONERS = ("nystrom", None)
BATCHES = ("probes", "orbit")
# α of λ = α·tr(η)/P, chosen by benchmarks/study_damping.py: the largest α at which no ratio or
# specific coupling moves by more than its 90 % bootstrap interval's width from its α = 1e-4 value.
DEFAULT_RELATIVE_DAMPING = 1e-2
# Products with many vectors are vmapped in row chunks: one call sees at most this many samples
# (vectors × probe batch), which bounds the activation memory of the batched jvp / vjp.
SAMPLES_PER_CALL = 64


class LinearizedModel:
    """``J v`` and ``Jᵀ u`` of the batched forward ``θ ↦ f_θ(inputs)`` at the current ``θ``.

    Args:
        fmodel: the functional model.
        inputs: the batch ``(B, C, H, W)`` the Jacobian is taken on.
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
                # complex parameters are viewed as (real, imag) pairs: rows must be contiguous
                batched(self.fmodel.layout.unflatten(vectors[rows].contiguous()))
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


class GaussNewtonMatrix:
    r"""``η = s JᵀJ`` on a batch, as products: ``η v = s Jᵀ(J v)``.

    Args:
        linear: ``J`` of the batch.
        scale: ``s`` (``1/F`` for the default convention).
    """

    def __init__(self, linear: LinearizedModel, scale: float):
        self.linear, self.scale = linear, scale
        self.size = linear.fmodel.layout.size

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """``η v`` for rows ``(c, P)``."""
        return self.scale * self.linear.vjp(self.linear.jvp(rows))

    def quadratic(self, rows: torch.Tensor) -> torch.Tensor:
        """``vᵀ η v = s ‖J v‖²`` for rows ``(c, P)`` -> ``(c,)`` (``jvp`` only)."""
        return self.scale * self.linear.jvp(rows).pow(2).sum(-1)


class CGResult(NamedTuple):
    """Outcome of :func:`batched_cg`.

    Attributes:
        solution: ``y`` ``(c, P)``.
        iterations: products with ``A`` in the loop.
        residual: worst true relative residual ``‖v − A y‖ / ‖v‖`` over rows.
        converged: whether every row met the tolerance before the iteration cap.
    """

    solution: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def relative_residual(rhs: torch.Tensor, image: torch.Tensor) -> float:
    """Worst ``‖v − A y‖ / ‖v‖`` over rows, from ``v`` and ``A y`` ``(c, P)`` (0 for zero rows)."""
    norm = rhs.norm(dim=-1)
    ratios = (rhs - image).norm(dim=-1) / torch.where(norm > 0, norm, 1.0)
    return float(ratios.max()) if ratios.numel() else 0.0


def batched_cg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    tol: float,
    max_iter: int,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CGResult:
    r"""Preconditioned conjugate gradients for ``A y_i = v_i``, ``A`` symmetric positive definite.

    Every row is an independent system; all rows share each (batched) product with ``A``.

    Args:
        matvec: ``(c, P) -> (c, P)``, rows mapped by ``A``.
        rhs: right-hand sides as rows ``(c, P)``.
        tol: stop a row once its recurrence residual ``‖v − A y‖ ≤ tol ‖v‖``.
        max_iter: at most this many products with ``A`` (plus one for the true residual).
        preconditioner: ``r ↦ M⁻¹ r`` on rows, ``M ≈ A`` symmetric positive definite; ``None`` for
            plain cg.

    Returns:
        :class:`CGResult`; zero rows give zero solutions and residual 0.
    """
    precondition = preconditioner if preconditioner is not None else (lambda rows: rows)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    search = precondition(residual)
    direction = search.clone()
    rz = (residual * search).sum(-1)
    norm = rhs.norm(dim=-1)
    iterations = 0
    done = residual.norm(dim=-1) <= tol * norm
    while not bool(done.all()) and iterations < max_iter:
        product = matvec(direction)
        iterations += 1
        curvature = (direction * product).sum(-1)
        alpha = torch.where(done, 0.0, rz / torch.where(done, 1.0, curvature))
        solution += alpha[:, None] * direction
        residual -= alpha[:, None] * product
        done = done | (residual.norm(dim=-1) <= tol * norm)
        search = precondition(residual)
        rz_new = (residual * search).sum(-1)
        beta = torch.where(done, 0.0, rz_new / torch.where(rz != 0, rz, 1.0))
        direction = search + beta[:, None] * direction
        rz = torch.where(done, rz, rz_new)
    worst = relative_residual(rhs, matvec(solution))
    return CGResult(solution, iterations, worst, bool(done.all()))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _positive(value: Any, name: str, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} ({meaning}) must be a finite number > 0, got {value!r}")
    return float(value)


def _choice(value: Any, name: str, options: tuple) -> Any:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(options)}")
    return value


class GaussNewton(Metric):
    r"""Damped Gauss–Newton metric ``χ = η + λI``, ``η = (1/F) JᵀJ`` (see the module docstring).

    ``GaussNewton()`` (the ``"gauss_newton"`` shorthand) is the reference: Nyström-preconditioned
    cg on the probe-batch ``χ`` with ``λ = 10⁻² · tr(η)/P``.

    Args:
        relative_damping: ``α`` in ``λ = α · tr(η) / P`` (default ``10⁻²``, from a study of the
            ratios over four decades of ``α``); leave it unset when giving ``damping``.
        damping: an absolute ``λ > 0`` instead (to reproduce a paper's convention).
        output_scale: ``s`` in ``η = s JᵀJ``; ``None`` means ``1/F``, ``1.0`` the no-``1/F``
            convention.
        solver: ``"cg"`` (the reference, exact to ``tol``) or ``"subspace"`` (the Galerkin
            approximation on the span of the gradients).
        preconditioner: ``"nystrom"`` or ``None`` (plain cg), for ``"cg"``.
        batch: ``"probes"`` (``η`` on the untransformed probes, the papers') or ``"orbit"``
            (``(1/K) Σ_g η(g·x)`` over the measured elements).
        tol: relative residual at which cg stops, per right-hand side.
        max_iter: cg iteration cap; reaching it before ``tol`` warns.
        max_rank: cap of the adaptive Nyström rank ``r`` (memory holds three ``r × P`` blocks); also
            caps the rank-16 sketch of the trace estimate.
        trace_probes: Rademacher vectors of the (Nyström-deflated) Hutchinson estimate of
            ``tr(η)``.
        energy_cutoff: ``subspace`` keeps directions with ``σ_i² ≥ energy_cutoff · σ_1²``.
        seed: seed of the trace estimate and the Nyström sketch.

    Raises:
        ValueError: for an invalid setting, or both ``damping`` and ``relative_damping``.

    Example:
        >>> GaussNewton()
        GaussNewton(relative_damping=0.01, solver='cg', preconditioner='nystrom', batch='probes', tol=0.0005, max_iter=100, max_rank=256, trace_probes=8, energy_cutoff=1e-12, seed=0)
        >>> GaussNewton(damping=1e-4, output_scale=1.0, solver="subspace").element_separable
        False
    """

    name = "gauss_newton"

    def __init__(
        self,
        relative_damping: float | None = None,
        *,
        damping: float | None = None,
        output_scale: float | None = None,
        solver: str = "cg",
        preconditioner: str | None = "nystrom",
        batch: str = "probes",
        tol: float = 5e-4,
        max_iter: int = 100,
        max_rank: int = 256,
        trace_probes: int = 8,
        energy_cutoff: float = 1e-12,
        seed: int = 0,
    ):
        if damping is not None and relative_damping is not None:
            raise ValueError(
                f"got both relative_damping={relative_damping!r} (λ = α·tr(η)/P, scale-free) and "
                f"damping={damping!r} (absolute λ); pass only one"
            )
        if damping is None:
            alpha = DEFAULT_RELATIVE_DAMPING if relative_damping is None else relative_damping
            self.relative_damping = _positive(alpha, "relative_damping", "α in λ = α·tr(η)/P")
            self.damping = None
        else:
            self.relative_damping = None
            self.damping = _positive(damping, "damping", "absolute λ; χ must be invertible")
        self.output_scale = (
            None if output_scale is None else _positive(output_scale, "output_scale", "s in sJᵀJ")
        )
        self.solver = _choice(solver, "Gauss–Newton solver", SOLVERS)
        self.preconditioner = _choice(preconditioner, "preconditioner", PRECONDITIONERS)
        self.batch = _choice(batch, "Gauss–Newton batch", BATCHES)
        self.tol = _positive(tol, "tol", "relative residual of cg")
        self.max_iter = _positive_int(max_iter, "max_iter")
        self.max_rank = _positive_int(max_rank, "max_rank")
        self.trace_probes = _positive_int(trace_probes, "trace_probes")
        if isinstance(energy_cutoff, bool) or not 0 <= energy_cutoff < 1:
            raise ValueError(f"energy_cutoff must be in [0, 1), got {energy_cutoff!r}")
        self.energy_cutoff = float(energy_cutoff)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.element_separable = solver == "cg" and batch == "probes"

    def _settings(self) -> dict[str, Any]:
        """The constructor arguments that reproduce this metric."""
        settings: dict[str, Any] = (
            {"damping": self.damping}
            if self.relative_damping is None
            else {"relative_damping": self.relative_damping}
        )
        if self.output_scale is not None:
            settings["output_scale"] = self.output_scale
        names = ("solver", "preconditioner", "batch", "tol", "max_iter", "max_rank")
        settings.update({name: getattr(self, name) for name in names})
        settings.update(
            trace_probes=self.trace_probes, energy_cutoff=self.energy_cutoff, seed=self.seed
        )
        return settings

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self._settings().items())
        return f"GaussNewton({arguments})"

    def _matrix(self, problem: InfluenceProblem) -> GaussNewtonMatrix:
        """``η`` on the chosen batch, with its output scale."""
        if self.batch == "probes":
            linear = LinearizedModel(problem.fmodel, problem.ket_inputs)
            count = 1
        else:
            if problem.orbit_inputs is None:
                raise ValueError(
                    "batch='orbit' builds χ from the transformed probe inputs, but this "
                    "InfluenceProblem has no orbit_inputs; use batch='probes'"
                )
            batches = list(problem.orbit_inputs())
            linear = LinearizedModel(problem.fmodel, torch.cat(batches))
            count = len(batches)
        # (1/K) Σ_g s J_gᵀJ_g = (s/K) J_Gᵀ J_G; with s = 1/F per batch, s/K = 1/F of the stack
        scale = 1.0 / linear.num_outputs if self.output_scale is None else self.output_scale / count
        return GaussNewtonMatrix(linear, scale)

    def reduce(self, problem: InfluenceProblem) -> Reduction:
        """Reduce with ``χ⁻¹`` from the chosen solver; diagnostics in ``info``."""
        eta = self._matrix(problem)
        fmodel = problem.fmodel
        generator = torch.Generator(device=fmodel.device).manual_seed(self.seed)
        sketch = NystromSketch(
            eta, eta.size, generator=generator, dtype=fmodel.dtype, device=fmodel.device
        )
        first = sketch.grow(min(INITIAL_RANK, self.max_rank))
        trace = trace_estimate(eta.quadratic, first, self.trace_probes, generator)
        if self.relative_damping is None:
            damping = self.damping
        else:
            damping = self.relative_damping * trace / eta.size
            if not damping > 0:
                raise ValueError(
                    f"the Gauss–Newton matrix η has estimated trace {trace!r}: the model's "
                    "outputs do not depend on the selected parameters, so the relative damping "
                    "λ = α·tr(η)/P is 0; check parameter_filter, or pass an absolute damping=..."
                )
        info: dict[str, Any] = {
            "damping": damping,
            "relative_damping": self.relative_damping,
            "trace_estimate": trace,
            "solver_residual": 0.0,
            "solver_iterations": 0,
            "preconditioner_rank": 0,
        }
        if self.solver == "subspace":
            del sketch, first
            return self._subspace(problem, eta, damping, info)

        def chi(rows: torch.Tensor) -> torch.Tensor:
            return eta(rows) + damping * rows

        preconditioner = None
        if self.preconditioner == "nystrom":
            approx = sketch.adapt(damping, self.max_rank)
            preconditioner = approx.preconditioner(damping)
            info["preconditioner_rank"] = approx.rank
        converged = True

        def solve(rows: torch.Tensor) -> torch.Tensor:
            nonlocal converged
            result = batched_cg(chi, rows, self.tol, self.max_iter, preconditioner)
            info["solver_iterations"] = max(info["solver_iterations"], result.iterations)
            info["solver_residual"] = max(info["solver_residual"], result.residual)
            converged &= result.converged
            return result.solution

        reduced = stream_reduce(problem, solve, problem.need_bra_self)
        if not converged:
            remedy = (
                "max_rank (a stronger Nyström preconditioner)"
                if preconditioner is not None
                else "preconditioner='nystrom'"
            )
            warnings.warn(
                f"Gauss–Newton conjugate gradients stopped at max_iter={self.max_iter} with "
                f"relative residual {info['solver_residual']:.2e} > tol={self.tol:g}, so the "
                f"influence matrix is inexact; raise relative_damping (a better-conditioned χ), "
                f"max_iter, or {remedy}",
                RuntimeWarning,
                stacklevel=2,
            )
        reduced.info = info
        return reduced

    def _subspace(
        self,
        problem: InfluenceProblem,
        eta: GaussNewtonMatrix,
        damping: float,
        info: dict[str, Any],
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
        coords = left[:, :rank] * sigma[:rank]  # G ≈ coords Qᵀ
        basis = right[:rank].contiguous()  # Qᵀ (r, P); svd returns a column-major Vᴴ
        del right
        jq = eta.linear.jvp(basis)  # (r, F)
        compressed = eta.scale * jq @ jq.T + damping * torch.eye(
            rank, dtype=jq.dtype, device=jq.device
        )
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


__all__ = [
    "CGResult",
    "GaussNewton",
    "GaussNewtonMatrix",
    "LinearizedModel",
    "batched_cg",
    "relative_residual",
]
