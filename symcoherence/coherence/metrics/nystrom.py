r"""Randomized Nyström approximation of a PSD operator, and the preconditioner built from it.

For a symmetric positive semi-definite ``A`` (``P × P``) reachable only through products, and a
test matrix ``Ω`` (``P × r``, orthonormal columns), the Nyström approximation is

.. math::

    Â = (AΩ)\,(Ω^T A Ω)^{+}\,(AΩ)^T = U \hat Λ U^T, \qquad 0 \preceq Â \preceq A,

with ``U`` (``P × r``) orthonormal and ``Λ̂ = diag(λ̂_1 ≥ … ≥ λ̂_r ≥ 0)``. It is computed stably
(Frangella, Tropp & Udell, *Randomized Nyström preconditioning*, SIAM J. Matrix Anal. Appl. 2023,
Algorithm 2.1) with a shift ``ν = √P · eps · ‖AΩ‖₂``: ``Y_ν = AΩ + νΩ``,
``Ωᵀ Y_ν = W D Wᵀ``, ``B = Y_ν W D^{-1/2}``, ``B = U Σ Vᵀ``, ``Λ̂ = max(Σ² − ν, 0)``. The
reductions run in float64 (``eps`` of float64) whatever the sketch's dtype: float32 inner products
over ``P`` entries would hide every eigenvalue below about ``√P · 10⁻⁷ · λ̂_1``.

For ``A + λI`` it gives the preconditioner (same paper, eq. 5.3)

.. math::

    P = \frac{U(\hat Λ + λI)U^T}{\hat λ_r + λ} + (I − UU^T), \qquad
    P^{-1} = (\hat λ_r + λ)\, U(\hat Λ + λI)^{-1} U^T + (I − UU^T),

under which ``A + λI`` has condition number at most ``(λ̂_r + λ + ‖A − Â‖₂) / λ``: conjugate
gradients converge fast once the rank ``r`` covers the eigenvalues of ``A`` above ``λ``.
:meth:`NystromSketch.adapt` doubles ``r`` (sketching only the new columns) until ``λ̂_r`` and
``‖A − Â‖₂`` fall below a multiple of ``λ`` or ``r`` reaches its cap, and :func:`trace_estimate`
uses ``Â`` to estimate ``tr(A)`` with a small variance. Vectors are rows throughout: a block of
``c`` vectors is ``(c, P)``.

Example:
    >>> import torch
    >>> a = torch.randn(40, 6, dtype=torch.float64)
    >>> gram = a @ a.T                                    # rank 6
    >>> sketch = NystromSketch(lambda rows: rows @ gram, 40, dtype=torch.float64,
    ...                        generator=torch.Generator().manual_seed(0))
    >>> approx = sketch.adapt(damping=1e-3, max_rank=8)
    >>> approx.rank, bool(torch.allclose(approx.dense(), gram, atol=1e-9))
    (8, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# the first sketch has this many columns (fewer if the cap or the dimension is smaller)
INITIAL_RANK = 16
# the adaptive rank stops once λ̂_r and the estimated ‖A − Â‖ are both ≤ RATIO·λ, which bounds the
# preconditioned condition number by 1 + 2·RATIO
RATIO = 10.0
# power iterations of the estimate of ‖A − Â‖
POWER_STEPS = 10
# float64 reductions over (r, P) blocks run on at most this many columns at a time
COLUMNS_PER_CHUNK = 1 << 16


def _chunks(size: int) -> list[slice]:
    return [slice(start, start + COLUMNS_PER_CHUNK) for start in range(0, size, COLUMNS_PER_CHUNK)]


def _gram(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left @ rightᵀ`` for ``(a, P)`` and ``(b, P)`` in float64, accumulated over column chunks."""
    out = left.new_zeros(left.shape[0], right.shape[0], dtype=torch.float64)
    for columns in _chunks(left.shape[-1]):
        out += left[:, columns].double() @ right[:, columns].double().T
    return out


@dataclass
class NystromApproximation:
    """``Â = U diag(Λ̂) Uᵀ``.

    Attributes:
        basis: ``Uᵀ`` ``(r, P)``, orthonormal rows.
        eigenvalues: ``Λ̂`` ``(r,)``, non-negative, descending.
    """

    basis: torch.Tensor
    eigenvalues: torch.Tensor

    @property
    def rank(self) -> int:
        """``r``, the number of sketched directions."""
        return self.eigenvalues.numel()

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """``Â v`` for rows ``(c, P)``."""
        return ((rows @ self.basis.T) * self.eigenvalues) @ self.basis

    def dense(self) -> torch.Tensor:
        """``Â`` as a dense ``(P, P)`` matrix (for tests on tiny operators)."""
        return self.basis.T @ (self.eigenvalues[:, None] * self.basis)

    def preconditioner(self, damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
        r"""``v ↦ P⁻¹ v`` for ``A + λI`` on rows ``(c, P)`` (see the module docstring).

        Computed in float64 and returned in the rows' dtype: along the top eigenvectors ``P⁻¹``
        scales by ``(λ̂_r + λ)/(λ̂_i + λ)``, often far below float32's epsilon, which
        ``v − (1 − that) v`` in float32 would round to 0 (a singular preconditioner).

        Args:
            damping: ``λ > 0``.
        """
        eigenvalues = self.eigenvalues.double()
        smallest = eigenvalues[-1:]  # empty at rank 0: P⁻¹ = I
        weights = (smallest + damping) / (eigenvalues + damping) - 1.0
        basis = self.basis

        def apply(rows: torch.Tensor) -> torch.Tensor:
            wide = rows.double()
            scaled = _gram(wide, basis) * weights  # (c, r)
            out = torch.empty_like(rows)
            for columns in _chunks(rows.shape[-1]):
                out[:, columns] = wide[:, columns] + scaled @ basis[:, columns].double()
            return out

        return apply


def nystrom_from_sketch(test: torch.Tensor, sketch: torch.Tensor) -> NystromApproximation:
    r"""The stabilized Nyström approximation from a test matrix and its sketch.

    Every reduction runs in float64 over column chunks, so memory holds ``r × r`` matrices and one
    chunk beside the ``(r, P)`` inputs, and a float32 sketch loses no eigenvalue to float32 inner
    products. With ``Y_ν = Y + νΩ``, ``ν = √P·eps₆₄·‖Y‖₂``, ``ΩᵀY_ν = W D Wᵀ`` and
    ``B = Y_ν W D^{-1/2}``: ``BᵀB = V Σ² Vᵀ``, ``Λ̂ = max(Σ² − ν, 0)`` and ``U = B V Σ⁻¹``.

    Args:
        test: ``Ωᵀ`` ``(r, P)`` with orthonormal rows.
        sketch: ``(AΩ)ᵀ`` ``(r, P)``.

    Returns:
        ``Â = (AΩ)(ΩᵀAΩ)⁺(AΩ)ᵀ`` as a :class:`NystromApproximation` in the sketch's dtype, over the
        directions with ``Σ > 0`` (all of them unless rounding says otherwise; rank 0 when the
        sketch vanishes).
    """
    size = sketch.shape[-1]
    yy = _gram(sketch, sketch)
    norm = float(torch.linalg.eigvalsh(yy)[-1].clamp_min(0).sqrt()) if len(yy) else 0.0
    if not norm > 0:
        return NystromApproximation(sketch[:0], sketch.new_zeros(0))
    shift = math.sqrt(size) * torch.finfo(torch.float64).eps * norm
    core = _gram(test, sketch) + shift * _gram(test, test)  # Ωᵀ Y_ν
    values, vectors = torch.linalg.eigh((core + core.T) / 2)
    # Ωᵀ(A + νI)Ω ⪰ νI in exact arithmetic; the floor only absorbs rounding below ν
    factor = (vectors / values.clamp_min(shift).sqrt()).T  # Bᵀ = factor · Y_νᵀ

    def rows_of_b(columns: slice) -> torch.Tensor:
        return factor @ (sketch[:, columns].double() + shift * test[:, columns].double())

    gram = sum(part @ part.T for part in map(rows_of_b, _chunks(size)))
    squares, right = torch.linalg.eigh(gram)
    keep = squares.flip(0) > 0
    squares, right = squares.flip(0)[keep], right.flip(1)[:, keep]
    coefficients = (right / squares.sqrt()).T  # Uᵀ = Σ⁻¹ Vᵀ Bᵀ
    basis = sketch.new_empty(len(squares), size)
    for columns in _chunks(size):
        basis[:, columns] = (coefficients @ rows_of_b(columns)).to(sketch.dtype)
    return NystromApproximation(basis, (squares - shift).clamp_min(0.0).to(sketch.dtype))


class NystromSketch:
    r"""A sketch ``Y = AΩ`` of a PSD operator that grows block by block.

    New Gaussian columns of ``Ω`` are orthonormalized against the previous ones (so the old
    columns of ``Y`` stay valid) and only they are sketched.

    Args:
        matvec: ``(c, P) -> (c, P)``, rows mapped by ``A``.
        size: ``P``.
        generator: source of the Gaussian test matrix (seeded by the caller).
        dtype: floating dtype of the test matrix.
        device: where the test matrix lives (the generator's device).
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        size: int,
        *,
        generator: torch.Generator,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ):
        self.matvec, self.size, self.generator = matvec, size, generator
        self.test = torch.empty(0, size, dtype=dtype, device=device)
        self.sketch = torch.empty_like(self.test)

    @property
    def rank(self) -> int:
        """Columns sketched so far."""
        return self.test.shape[0]

    def grow(self, rank: int) -> NystromApproximation:
        """Sketch up to ``min(rank, P)`` columns; return the approximation."""
        new = torch.randn(
            max(min(rank, self.size) - self.rank, 0),
            self.size,
            generator=self.generator,
            dtype=self.test.dtype,
            device=self.test.device,
        )
        if len(new):
            for _ in range(2):  # block Gram–Schmidt, repeated once for orthogonality to rounding
                new -= (new @ self.test.T) @ self.test
            new = torch.linalg.qr(new.T).Q.T
            self.test = torch.cat([self.test, new])
            self.sketch = torch.cat([self.sketch, self.matvec(new)])
        return nystrom_from_sketch(self.test, self.sketch)

    def error_estimate(self, approx: NystromApproximation, steps: int = POWER_STEPS) -> float:
        """``‖A − Â‖₂`` by power iteration on one Gaussian vector (a lower bound, usually close)."""
        vector = torch.randn(
            1, self.size, generator=self.generator, dtype=self.test.dtype, device=self.test.device
        )
        for _ in range(steps):
            vector = vector / vector.norm()
            vector = self.matvec(vector) - approx(vector)
        return float(vector.norm())

    def adapt(self, damping: float, max_rank: int, ratio: float = RATIO) -> NystromApproximation:
        r"""Double the rank until ``λ̂_r`` and ``‖A − Â‖₂`` are ``≤ ratio · λ``, or to the cap.

        Starts from the current rank (at least ``min(16, max_rank)``) and stops at
        ``min(max_rank, P)``. The error is estimated (:meth:`error_estimate`) only once
        ``λ̂_r ≤ ratio · λ``. On stopping early, the preconditioned ``A + λI`` has condition number
        at most ``1 + 2·ratio``. No sketch resolves eigenvalues below the rounding error of the
        products themselves (for float32 products up to about ``10⁻⁷ ‖A‖₂``), so a ``λ`` near that
        drives the rank to its cap.

        Args:
            damping: ``λ > 0``, the shift the preconditioner is for.
            max_rank: the largest rank (memory holds three ``max_rank × P`` blocks).
            ratio: the stopping threshold, in units of ``λ``.
        """
        cap = min(max_rank, self.size)
        rank = min(max(self.rank, INITIAL_RANK), cap)
        threshold = ratio * damping
        while True:
            approx = self.grow(rank)
            if rank >= cap or approx.rank == 0:
                return approx
            if approx.eigenvalues[-1] <= threshold and self.error_estimate(approx) <= threshold:
                return approx
            rank = min(2 * rank, cap)


def trace_estimate(
    quadratic: Callable[[torch.Tensor], torch.Tensor],
    approx: NystromApproximation,
    probes: int,
    generator: torch.Generator,
) -> float:
    r"""``tr(A) ≈ tr(Â) + (1/h) Σ_i v_iᵀ (A − Â) v_i`` over ``h`` Rademacher vectors ``v_i``.

    Hutchinson's estimator applied to the Nyström residual ``A − Â ⪰ 0`` (Nyström++: Persson,
    Cortinovis & Kressner, SIAM J. Matrix Anal. Appl. 2022): unbiased, and its variance ``2(‖A − Â‖_F² − Σ_j (A − Â)_{jj}²)/h`` no longer
    contains the dominant eigenvalues that ``Â`` captures. With ``Â = 0`` it is plain Hutchinson.

    Args:
        quadratic: rows ``v`` ``(c, P)`` -> ``vᵀ A v`` ``(c,)``.
        approx: ``Â``, built independently of the ``v_i``.
        probes: ``h``.
        generator: source of the Rademacher vectors.
    """
    basis = approx.basis
    signs = torch.randint(0, 2, (probes, basis.shape[-1]), generator=generator, device=basis.device)
    rows = (2 * signs - 1).to(basis.dtype)
    captured = ((rows @ basis.T).pow(2) * approx.eigenvalues).sum(-1)
    return float(approx.eigenvalues.sum()) + float((quadratic(rows) - captured).mean())


__all__ = ["NystromApproximation", "NystromSketch", "nystrom_from_sketch", "trace_estimate"]
