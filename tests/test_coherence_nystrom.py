"""Randomized Nyström approximation, its preconditioner and the trace estimate, against dense math."""

import math

import pytest
import torch
from helpers.zoo import data, make

from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.metrics.cg import batched_cg
from symcoherence.coherence.metrics.linearized import GaussNewtonMatrix, LinearizedModel
from symcoherence.coherence.metrics.nystrom import NystromSketch, trace_estimate
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing.reference import dense_gauss_newton

SIZE = 60


def decaying_psd(size=SIZE, rank=SIZE, seed=0):
    """``A = V diag(10^{-k/4}) Vᵀ`` with a random orthogonal ``V``: a spread-out spectrum."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    values = 10.0 ** (-torch.arange(size, dtype=torch.float64) / 4)
    values[rank:] = 0
    return (basis * values) @ basis.T


def sketch_of(matrix, seed=0):
    return NystromSketch(
        lambda rows: rows @ matrix,
        matrix.shape[0],
        generator=torch.Generator().manual_seed(seed),
        dtype=matrix.dtype,
    )


def test_approximation_is_the_nystrom_formula():
    a = decaying_psd()
    sketch = sketch_of(a)
    approx = sketch.grow(12)
    omega, y = sketch.test.T, sketch.sketch.T  # Ω (P, r), AΩ (P, r)
    expected = y @ torch.linalg.pinv(omega.T @ y) @ y.T
    # the stabilizing shift ν = √P·eps·‖AΩ‖ perturbs Â by O(ν) (Frangella–Tropp–Udell, Alg. 2.1)
    torch.testing.assert_close(approx.dense(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        sketch.test @ sketch.test.T, torch.eye(12, dtype=a.dtype), **TOL["fp64"]
    )
    torch.testing.assert_close(approx.basis @ approx.basis.T, torch.eye(12, dtype=a.dtype))
    assert (approx.eigenvalues[:-1] >= approx.eigenvalues[1:]).all()
    # 0 ⪯ Â ⪯ A: the error is positive semi-definite and the eigenvalues interlace
    rounding = TOL["fp64"]["atol"]
    assert torch.linalg.eigvalsh(a - approx.dense()).min() >= -rounding
    exact = torch.linalg.eigvalsh(a).flip(0)
    assert (approx.eigenvalues <= exact[:12] + rounding).all()


def test_full_rank_sketch_is_exact_and_growing_keeps_old_columns():
    a = decaying_psd(rank=10)
    sketch = sketch_of(a)
    first = sketch.grow(8)
    old_test = sketch.test.clone()
    exact = sketch.grow(16)
    torch.testing.assert_close(sketch.test[:8], old_test, **TOL["exact"])
    assert first.rank == 8 and exact.rank == 16
    torch.testing.assert_close(exact.dense(), a, **TOL["fp64"])  # rank(A) = 10 ≤ 16


def test_preconditioner_is_the_paper_formula_and_bounds_the_condition_number():
    a = decaying_psd()
    damping = 1e-3
    approx = sketch_of(a).grow(16)
    u, lam = approx.basis.T, approx.eigenvalues
    eye = torch.eye(SIZE, dtype=a.dtype)
    inverse = (lam[-1] + damping) * u @ torch.diag(1 / (lam + damping)) @ u.T + (eye - u @ u.T)
    rows = torch.randn(5, SIZE, dtype=a.dtype, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(approx.preconditioner(damping)(rows), rows @ inverse, **TOL["fp64"])
    # κ(P^{-1/2}(A + λI)P^{-1/2}) ≤ (λ̂_r + λ + ‖A − Â‖)/λ (Frangella–Tropp–Udell, Prop. 5.3)
    values, vectors = torch.linalg.eigh(inverse)
    root = vectors @ torch.diag(values.sqrt()) @ vectors.T
    spectrum = torch.linalg.eigvalsh(root @ (a + damping * eye) @ root)
    error = torch.linalg.matrix_norm(a - approx.dense(), ord=2)
    bound = (lam[-1] + damping + error) / damping
    assert spectrum.max() / spectrum.min() <= bound * (1 + 1e-10)
    assert spectrum.max() / spectrum.min() < torch.linalg.cond(a + damping * eye) / 100


def test_float32_preconditioner_keeps_scales_below_epsilon_and_cg_converges():
    # one eigenvalue 10^8 times the others: P⁻¹ scales it by ≈ 10⁻⁸ < float32 eps ≈ 1.2·10⁻⁷
    a = decaying_psd(rank=8).float()
    a[0, 0] += 1e8
    damping = 1e-3
    approx = sketch_of(a).grow(16)
    inverse = approx.preconditioner(damping)
    unit = torch.zeros(1, SIZE)
    unit[0, 0] = 1
    scaled = float(inverse(unit)[0, 0])
    assert 0 < scaled < 1e-6  # positive, not rounded to 0: the preconditioner stays definite
    rhs = torch.randn(4, SIZE, generator=torch.Generator().manual_seed(0))
    result = batched_cg(lambda v: v @ a + damping * v, rhs, 1e-5, 30, inverse)
    # the true residual of a float32 product is limited to about κ(A + λI)·eps ≈ 10³ · 10⁻⁷
    assert result.converged and result.iterations <= 5 and result.residual <= 1e-3


@pytest.mark.parametrize(("damping", "expected_rank"), [(1e-1, 16), (10**-4.5, 32), (1e-9, 40)])
def test_adaptive_rank_doubles_until_eigenvalue_and_error_are_below_damping(damping, expected_rank):
    a = decaying_psd()
    sketch = sketch_of(a)
    approx = sketch.adapt(damping, max_rank=40, ratio=1.0)
    assert approx.rank == expected_rank  # 16, 32, then the cap
    error = float(torch.linalg.matrix_norm(a - approx.dense(), ord=2))
    if expected_rank < 40:
        assert approx.eigenvalues[-1] <= damping and error <= damping
    if expected_rank > 16:  # it did not stop at half the rank
        half = sketch_of(a).grow(expected_rank // 2)
        assert float(torch.linalg.matrix_norm(a - half.dense(), ord=2)) > damping


def test_error_estimate_is_close_to_the_spectral_norm_of_the_error():
    a = decaying_psd()
    sketch = sketch_of(a)
    approx = sketch.grow(12)
    exact = float(torch.linalg.matrix_norm(a - approx.dense(), ord=2))
    estimate = sketch.error_estimate(approx)
    # power iteration: a lower bound that approaches ‖A − Â‖₂ (the top two eigenvalues of the
    # error differ by about 10^{1/4}, so 10 steps get within a few percent)
    assert 0.9 * exact <= estimate <= exact * (1 + 1e-12)


def test_nystrom_of_the_gauss_newton_matrix_matches_the_dense_eigendecomposition():
    model = make("circular_conv")  # P = 58
    x, _ = data()
    eta_dense = dense_gauss_newton(model, [x], list(model.parameters()))
    fmodel = FunctionalModel(model)
    linear = LinearizedModel(fmodel, x)
    eta = GaussNewtonMatrix(linear, 1.0 / linear.num_outputs)
    fast = NystromSketch(
        eta, eta.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).grow(20)
    dense = sketch_of(eta_dense).grow(20)  # same seed: the same Ω
    torch.testing.assert_close(fast.dense(), dense.dense(), **TOL["fp64"])
    full = NystromSketch(
        eta, eta.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).grow(eta.size)
    exact = torch.linalg.eigvalsh(eta_dense).flip(0)
    top = exact[0]
    # two eigensolvers on the same float64 matrix agree to rounding relative to its norm
    torch.testing.assert_close(full.eigenvalues, exact, rtol=0, atol=TOL["fp64"]["rtol"] * top)


def test_trace_estimate_is_unbiased_with_the_variance_hutchinson_predicts():
    model = make("mlp")  # P = 912
    x, _ = data()
    eta_dense = dense_gauss_newton(model, [x], list(model.parameters()))
    linear = LinearizedModel(FunctionalModel(model), x)
    eta = GaussNewtonMatrix(linear, 1.0 / linear.num_outputs)
    torch.testing.assert_close(
        eta.quadratic(torch.eye(eta.size, dtype=torch.float64)).sum(), eta_dense.trace()
    )
    exact, probes = float(eta_dense.trace()), 8
    empty = sketch_of(eta_dense).grow(0)
    # plain Hutchinson (Â = 0): Var(vᵀAv) = 2(‖A‖_F² − Σ A_jj²) for Rademacher v
    spread = math.sqrt(2 * float(eta_dense.pow(2).sum() - eta_dense.diagonal().pow(2).sum()))
    generator = torch.Generator().manual_seed(0)
    plain = torch.tensor(
        [trace_estimate(eta.quadratic, empty, probes, generator) for _ in range(40)]
    )
    # seeded: the mean of 40 estimates lies within 4 standard errors of tr(η)
    assert abs(float(plain.mean()) - exact) <= 4 * spread / math.sqrt(probes * 40)
    # deflated by a rank-16 Nyström approximation: far smaller spread, still unbiased
    approx = NystromSketch(
        eta, eta.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).grow(16)
    residual = eta_dense - approx.dense()
    deflated_spread = math.sqrt(2 * float(residual.pow(2).sum() - residual.diagonal().pow(2).sum()))
    assert deflated_spread < spread
    deflated = torch.tensor(
        [trace_estimate(eta.quadratic, approx, probes, generator) for _ in range(40)]
    )
    assert abs(float(deflated.mean()) - exact) <= 4 * deflated_spread / math.sqrt(probes * 40)
    assert float(deflated.std()) < float(plain.std())
