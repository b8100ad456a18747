"""Gauss–Newton metric: both solvers against a dense J, χ = JᵀJ/F + λI and χ⁻¹ in float64."""

import pytest
import torch
from helpers.zoo import PSEUDO, data, make  # noqa: F401

import symcoherence as sc
from symcoherence.coherence import GaussNewton
from symcoherence.coherence.gauss_newton import batched_cg
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing.reference import reference_grads, reference_jacobian

D4 = sc.groups.D4()


def assert_normwise_close(actual, expected, rtol):
    """``max|actual − expected| ≤ rtol · max|expected|``: an inverse of a matrix with condition number
    κ is accurate to κ·eps relative to its norm, not entry by entry (entries can nearly cancel)."""
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error <= rtol, f"normwise relative error {error:.2e} > {rtol:.0e}"


def dense_influence(model, x, y, elements, damping, galerkin=False, cutoff=1e-12):
    """H from an explicit J, χ and χ⁻¹ built here (independently of the engine and its reference)."""
    params = list(model.parameters())
    jac = reference_jacobian(model, x, params)  # (F, P)
    chi = jac.T @ jac / jac.shape[0] + damping * torch.eye(jac.shape[1], dtype=jac.dtype)
    kets = reference_grads(model, sc.smse, x, y, params)
    bras = torch.stack(
        [reference_grads(model, sc.smse, *D4.act_pair(g, x, y, PSEUDO), params) for g in elements]
    )
    if galerkin:
        stacked = torch.cat([kets, bras.reshape(-1, kets.shape[1])])
        _, s, vh = torch.linalg.svd(stacked, full_matrices=False)
        q = vh[s.pow(2) >= cutoff * s[0].pow(2)].T
        inverse = q @ torch.linalg.inv(q.T @ chi @ q) @ q.T
    else:
        inverse = torch.linalg.inv(chi)
    return torch.einsum("knp,pq,mq->knm", bras, inverse, kets), jac.shape[1]


def test_cg_matches_dense_inverse_to_its_tolerance():
    model = make("circular_conv")
    x, y = data()
    elements = ["e", "r", "sr"]
    expected, _ = dense_influence(model, x, y, elements, 1e-3)
    metric = GaussNewton(damping=1e-3, tol=1e-12, max_iter=2000)
    result = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=elements, metric=metric)
    # χ has condition number ≈ 1e4 at λ = 1e-3: compare normwise (see assert_normwise_close)
    assert_normwise_close(result.matrix, expected, TOL["fp64"]["rtol"])
    assert 0 < result.info["cg_iterations"] < 2000
    assert result.info["cg_relative_residual"] <= 1e-12


def test_cg_stops_at_its_tolerance_and_reports_it():
    model = make("circular_conv")
    x, y = data()
    loose = GaussNewton(damping=1e-3, tol=1e-2, max_iter=2000)
    capped = GaussNewton(damping=1e-3, tol=1e-14, max_iter=3)
    expected, _ = dense_influence(model, x, y, ["e"], 1e-3)
    for metric in (loose, capped):
        result = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=["e"], metric=metric)
        assert result.info["cg_iterations"] <= metric.max_iter
        error = (result.matrix - expected).abs().max() / expected.abs().max()
        assert error > 1e-10  # stopped early: not the exact answer
    assert capped.max_iter == 3 and result.info["cg_iterations"] == 3
    assert result.info["cg_relative_residual"] > 1e-14


def test_batched_cg_solves_each_column_and_handles_zero_rows():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    spd = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    rhs = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    rhs[1] = 0
    solution, iterations, residual = batched_cg(lambda v: v @ spd, rhs, 1e-13, 100)
    torch.testing.assert_close(solution, torch.linalg.solve(spd, rhs.T).T, **TOL["fp64"])
    assert solution[1].abs().max() == 0 and residual <= 1e-12 and iterations <= 100


def test_subspace_is_exact_when_the_gradients_span_parameter_space():
    # P = 10 (one 3×3 conv + bias); 4 kets + 4·8 bras span R^10, so Galerkin = the full inverse
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    x, y = data()
    expected, size = dense_influence(model, x, y, D4.elements, 1e-4)
    assert size == 10
    metric = GaussNewton(solver="subspace")
    result = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, metric=metric)
    assert result.info["subspace_rank"] == 10
    torch.testing.assert_close(result.matrix, expected, **TOL["fp64"])


def test_subspace_is_the_galerkin_inverse_when_it_does_not_span():
    model = make("mlp")  # P = 912 > 4 + 4·3 gradients
    x, y = data()
    elements = ["e", "r", "s"]
    galerkin, size = dense_influence(model, x, y, elements, 1e-4, galerkin=True)
    full, _ = dense_influence(model, x, y, elements, 1e-4)
    metric = GaussNewton(solver="subspace")
    result = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=elements, metric=metric)
    assert result.info["subspace_rank"] < size
    torch.testing.assert_close(result.matrix, galerkin, **TOL["fp64"])
    assert not torch.allclose(result.matrix, full, rtol=1e-3)  # a subspace, not the full inverse


@pytest.mark.parametrize("solver", ["cg", "subspace"])
def test_large_damping_approaches_identity_over_lambda(solver):
    model = make("group_norm")
    x, y = data()
    damping = 1e9
    identity = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO)
    metric = GaussNewton(damping=damping, solver=solver, tol=1e-12)
    result = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=metric, normalization="cosine"
    )
    # χ⁻¹ = (I/λ)(I − JᵀJ/(Fλ) + …): the relative correction is ‖JᵀJ‖/(Fλ) ≲ 1e-7 here
    assert_normwise_close(result.matrix * damping, identity.matrix, 1e-6)
    assert_normwise_close(result.bra_self * damping, identity.bra_self, 1e-6)
    assert_normwise_close(result.ket_self * damping, identity.ket_self, 1e-6)


def test_output_scale_replaces_one_over_f():
    model = make("circular_conv")
    x, y = data()
    num_outputs = x.numel()
    default = GaussNewton(solver="subspace")
    explicit = GaussNewton(solver="subspace", output_scale=1.0 / num_outputs)
    doubled = GaussNewton(solver="subspace", output_scale=2.0 / num_outputs)
    run = [
        sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, metric=m)
        for m in (default, explicit, doubled)
    ]
    torch.testing.assert_close(run[0].matrix, run[1].matrix, **TOL["fp64"])
    assert not torch.allclose(run[0].matrix, run[2].matrix)


def test_cg_needs_no_bra_self_unless_cosine():
    model = make("circular_conv")
    x, y = data()
    metric = GaussNewton(tol=1e-10)
    standard = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=metric, elements=["e", "r"]
    )
    assert torch.isnan(standard.bra_self).all()
    with pytest.raises(ValueError, match="recompute with normalization='cosine'"):
        _ = standard.with_normalization("cosine").normalized
    cosine = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=metric, elements=["e", "r"], normalization="cosine"
    )
    assert torch.isfinite(cosine.normalized).all() and cosine.normalized.abs().max() <= 1 + 1e-9


def test_bad_gauss_newton_arguments():
    for kwargs in (
        {"solver": "lu"},
        {"damping": 0.0},
        {"tol": 0},
        {"max_iter": 0},
        {"energy_cutoff": 1.0},
        {"output_scale": -1.0},
    ):
        with pytest.raises(ValueError):
            GaussNewton(**kwargs)
