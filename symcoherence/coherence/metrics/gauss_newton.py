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
  :mod:`~symcoherence.coherence.metrics.nystrom`). ``χ⁻¹ a`` is computed once and every streamed bra block
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
* ``"ekfac"`` (an approximation, :mod:`~symcoherence.coherence.metrics.ekfac`): ``η`` replaced by
  its eigenvalue-corrected Kronecker-factored fit on the chosen batch (``correction=False``: plain
  K-FAC), from pseudo-gradients of ``random_vectors`` Rademacher output vectors per sample
  (:mod:`~symcoherence.coherence.metrics.kronecker`); ``χ̃⁻¹`` costs matrix products only, and
  ``λ = α·tr(η̂)/P`` uses ``tr(EK-FAC) = tr(η̂)``. The fit costs ``random_vectors`` batched
  forward + backward passes over the batch and holds their pseudo-gradients (``ekfac_fit_bytes``).
  ``preconditioner="ekfac"`` uses the same fit to precondition the exact cg instead of Nyström.

``Reduction.info`` carries ``damping`` (``λ``), ``relative_damping`` (``α``, ``None`` for an
absolute ``damping``), ``trace_estimate`` (``tr(η)``), ``solver_residual`` (worst true relative
residual ``‖a − χ y‖ / ‖a‖`` over the solves), ``solver_iterations`` (most iterations of a solve)
and ``preconditioner_rank`` (``r``; 0 without one); ``subspace`` adds ``subspace_rank`` and
``subspace_columns``; an EK-FAC fit adds ``ekfac_fit_seconds``, ``ekfac_fit_bytes``,
``ekfac_passes``, ``ekfac_layers`` and ``ekfac_dense_blocks`` (``solver="ekfac"`` inverts its ``χ̃``
exactly: residual 0, iterations 0).

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
from typing import Any

import torch

from symcoherence.coherence.metrics import ekfac
from symcoherence.coherence.metrics.base import InfluenceProblem, Metric, Reduction, stream_reduce
from symcoherence.coherence.metrics.cg import batched_cg
from symcoherence.coherence.metrics.linearized import GaussNewtonMatrix, LinearizedModel
from symcoherence.coherence.metrics.nystrom import INITIAL_RANK, NystromSketch, trace_estimate
from symcoherence.coherence.metrics.subspace import subspace_reduce

SOLVERS = ("cg", "subspace", "ekfac")
PRECONDITIONERS = ("nystrom", "ekfac", None)
BATCHES = ("probes", "orbit")
# α of λ = α·tr(η)/P, chosen by benchmarks/study_damping.py: the largest α at which no ratio or
# specific coupling moves by more than its 90 % bootstrap interval's width from its α = 1e-4 value.
DEFAULT_RELATIVE_DAMPING = 1e-2


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
        solver: ``"cg"`` (the reference, exact to ``tol``), ``"subspace"`` (the Galerkin
            approximation on the span of the gradients) or ``"ekfac"`` (the Kronecker-factored
            approximation).
        preconditioner: ``"nystrom"``, ``"ekfac"`` or ``None`` (plain cg), for ``"cg"``.
        batch: ``"probes"`` (``η`` on the untransformed probes, the papers') or ``"orbit"``
            (``(1/K) Σ_g η(g·x)`` over the measured elements).
        tol: relative residual at which cg stops, per right-hand side.
        max_iter: cg iteration cap; reaching it before ``tol`` warns.
        max_rank: cap of the adaptive Nyström rank ``r`` (memory holds three ``r × P`` blocks); also
            caps the rank-16 sketch of the trace estimate.
        trace_probes: Rademacher vectors of the (Nyström-deflated) Hutchinson estimate of
            ``tr(η)``.
        energy_cutoff: ``subspace`` keeps directions with ``σ_i² ≥ energy_cutoff · σ_1²``.
        seed: seed of the trace estimate, the Nyström sketch and the EK-FAC output vectors.
        correction: ``"ekfac"`` refits the eigenvalues in the Kronecker eigenbasis (EK-FAC);
            ``False`` keeps K-FAC's products of factor eigenvalues.
        random_vectors: Rademacher output vectors per sample of the EK-FAC fit (``S``; its error
            falls as ``1/√S``), or ``None`` for every output unit vector (exact factors, one
            backward per output: tiny models only).

    Raises:
        ValueError: for an invalid setting, or both ``damping`` and ``relative_damping``; at the
            measurement, ``"ekfac"`` on a model the layer hooks do not cover (use ``"cg"``).

    Example:
        >>> GaussNewton()
        GaussNewton(relative_damping=0.01, solver='cg', preconditioner='nystrom', batch='probes', tol=0.0005, max_iter=100, max_rank=256, trace_probes=8, energy_cutoff=1e-12, seed=0, correction=True, random_vectors=1)
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
        correction: bool = True,
        random_vectors: int | None = 1,
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
        if not isinstance(correction, bool):
            raise ValueError(
                f"correction must be True (EK-FAC) or False (K-FAC), got {correction!r}"
            )
        self.correction = correction
        self.random_vectors = (
            None if random_vectors is None else _positive_int(random_vectors, "random_vectors")
        )
        self.element_separable = solver in ("cg", "ekfac") and batch == "probes"

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
        settings.update(correction=self.correction, random_vectors=self.random_vectors)
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

    def _damping(self, trace: float, size: int) -> float:
        """``λ``: the absolute ``damping``, or ``α · tr(η) / P``."""
        if self.relative_damping is None:
            return self.damping
        damping = self.relative_damping * trace / size
        if not damping > 0:
            raise ValueError(
                f"the Gauss–Newton matrix η has estimated trace {trace!r}: the model's "
                "outputs do not depend on the selected parameters, so the relative damping "
                "λ = α·tr(η)/P is 0; check parameter_filter, or pass an absolute damping=..."
            )
        return damping

    def _fit(self, problem: InfluenceProblem) -> tuple[Any, dict[str, Any]]:
        """The Kronecker-factored fit of ``η`` on the chosen batch."""
        return ekfac.fit(
            problem,
            self.batch,
            self.output_scale,
            self.random_vectors,
            self.seed,
            self.correction,
        )

    def reduce(self, problem: InfluenceProblem) -> Reduction:
        """Reduce with ``χ⁻¹`` from the chosen solver; diagnostics in ``info``."""
        if self.solver == "ekfac":
            curvature, fitted = self._fit(problem)
            damping = self._damping(curvature.trace, curvature.size)
            info = {
                "damping": damping,
                "relative_damping": self.relative_damping,
                "trace_estimate": curvature.trace,
                "solver_residual": 0.0,
                "solver_iterations": 0,
                "preconditioner_rank": 0,
                **fitted,
            }
            return ekfac.ekfac_reduce(problem, curvature, damping, info)
        eta = self._matrix(problem)
        fmodel = problem.fmodel
        generator = torch.Generator(device=fmodel.device).manual_seed(self.seed)
        sketch = NystromSketch(
            eta, eta.size, generator=generator, dtype=fmodel.dtype, device=fmodel.device
        )
        first = sketch.grow(min(INITIAL_RANK, self.max_rank))
        trace = trace_estimate(eta.quadratic, first, self.trace_probes, generator)
        damping = self._damping(trace, eta.size)
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
            return subspace_reduce(problem, eta, damping, self.energy_cutoff, info)

        def chi(rows: torch.Tensor) -> torch.Tensor:
            return eta(rows) + damping * rows

        preconditioner = None
        if self.preconditioner == "nystrom":
            approx = sketch.adapt(damping, self.max_rank)
            preconditioner = approx.preconditioner(damping)
            info["preconditioner_rank"] = approx.rank
        elif self.preconditioner == "ekfac":
            curvature, fitted = self._fit(problem)
            preconditioner = ekfac.preconditioner(curvature, damping)
            info.update(fitted)
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
            remedy = {
                "nystrom": "max_rank (a stronger Nyström preconditioner)",
                "ekfac": "random_vectors (a better EK-FAC fit) or preconditioner='nystrom'",
                None: "preconditioner='nystrom'",
            }[self.preconditioner]
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


__all__ = ["BATCHES", "PRECONDITIONERS", "SOLVERS", "GaussNewton"]
