"""Gauss–Newton metric: solvers, damping rules and batches against dense J, χ and χ⁻¹ in float64."""

import pytest
import torch
from helpers.zoo import PSEUDO, SCALAR, cast, data, make, zero_padded_conv
from torch import nn

import symcoherence as sc
from symcoherence.coherence import GaussNewton
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.metrics.base import InfluenceProblem
from symcoherence.coherence.metrics.cg import batched_cg
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing.reference import dense_gauss_newton, reference_grads

D4 = sc.groups.D4()
SHIFTS = sc.groups.Shifts(line=("x", [1, 2]))
INFO_KEYS = {
    "damping",
    "relative_damping",
    "solver_residual",
    "solver_iterations",
    "preconditioner_rank",
    "trace_estimate",
    "memory_budget",  # every measurement records its memory budget and largest chunk
    "chunk_size",
}


def assert_normwise_close(actual, expected, rtol):
    """``max|actual − expected| ≤ rtol · max|expected|``: an inverse of a matrix with condition number
    κ is accurate to κ·eps relative to its norm, not entry by entry (entries can nearly cancel)."""
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error <= rtol, f"normwise relative error {error:.2e} > {rtol:.0e}"


def dense_influence(
    model, x, y, elements, damping, *, output_scale=None, batch="probes", galerkin=False
):
    """H from an explicit J, χ and χ⁻¹ built here (independently of the engine)."""
    params = list(model.parameters())
    batches = [x] if batch == "probes" else [D4.act(g, x, PSEUDO) for g in elements]
    eta = dense_gauss_newton(model, batches, params, output_scale)
    chi = eta + damping * torch.eye(eta.shape[0], dtype=eta.dtype)
    kets = reference_grads(model, sc.smse, x, y, params)
    bras = torch.stack(
        [reference_grads(model, sc.smse, *D4.act_pair(g, x, y, PSEUDO), params) for g in elements]
    )
    if galerkin:
        stacked = torch.cat([kets, bras.reshape(-1, kets.shape[1])])
        _, s, vh = torch.linalg.svd(stacked, full_matrices=False)
        q = vh[s.pow(2) >= 1e-12 * s[0].pow(2)].T
        inverse = q @ torch.linalg.inv(q.T @ chi @ q) @ q.T
    else:
        inverse = torch.linalg.inv(chi)
    return torch.einsum("knp,pq,mq->knm", bras, inverse, kets)


def measure(model, x, y, metric, elements=("e", "r", "sr"), **kwargs):
    return sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, elements=list(elements), metric=metric, **kwargs
    )


# ---------------------------------------------------------------- the reference solver


def test_default_is_the_preconditioned_reference_and_matches_dense_inverse():
    model = make("mlp")  # P = 912, F = 144: η is singular, χ's condition number is large
    x, y = data()
    metric = GaussNewton(tol=1e-12, max_iter=200)
    assert (metric.solver, metric.preconditioner, metric.batch) == ("cg", "nystrom", "probes")
    assert metric.relative_damping == GaussNewton().relative_damping > 0
    result = measure(model, x, y, metric)
    assert set(result.info) == INFO_KEYS
    expected = dense_influence(model, x, y, ["e", "r", "sr"], result.info["damping"])
    assert_normwise_close(result.matrix, expected, TOL["fp64"]["rtol"])
    assert result.info["solver_residual"] <= 1e-12
    assert 0 < result.info["preconditioner_rank"] <= metric.max_rank
    plain = measure(model, x, y, GaussNewton(tol=1e-12, max_iter=2000, preconditioner=None))
    assert plain.info["preconditioner_rank"] == 0
    assert_normwise_close(plain.matrix, expected, TOL["fp64"]["rtol"])
    # the Nyström preconditioner is what makes the solve cheap
    assert 5 * result.info["solver_iterations"] < plain.info["solver_iterations"]


def test_relative_damping_is_alpha_times_the_mean_eigenvalue():
    model = make("circular_conv")
    x, y = data()
    eta = dense_gauss_newton(model, [x], list(model.parameters()))
    for alpha in (1e-3, 0.5):
        info = measure(model, x, y, GaussNewton(alpha), elements=["e"]).info
        assert info["relative_damping"] == alpha
        assert info["damping"] == alpha * info["trace_estimate"] / eta.shape[0]
        # P = 58 ≤ the Nyström rank 16 + residual probes: the estimate is close to exact
        assert abs(info["trace_estimate"] / float(eta.trace()) - 1) < 0.05


@pytest.mark.parametrize(
    ("output_scale", "damping"),
    [(1.0, 1e-4), (None, 1e-6)],
    ids=["january-JtJ+1e-4", "may-JtJ/F+1e-6"],
)
def test_absolute_damping_reproduces_the_paper_conventions(output_scale, damping):
    model = make("circular_conv")
    x, y = data()
    metric = GaussNewton(damping=damping, output_scale=output_scale, tol=1e-13, max_iter=500)
    result = measure(model, x, y, metric)
    assert result.info["damping"] == damping and result.info["relative_damping"] is None
    expected = dense_influence(model, x, y, ["e", "r", "sr"], damping, output_scale=output_scale)
    # χ is ill-conditioned at these small λ (κ ≈ 1e6): compare normwise
    assert_normwise_close(result.matrix, expected, 1e-8)
    reference = sc.testing.reference_orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, elements=["e", "r", "sr"], metric=metric
    )
    assert_normwise_close(result.matrix, reference.matrix, 1e-8)


class Scaled(nn.Module):
    def __init__(self, net, factor):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.factor * self.net(x)


def mse(prediction, target):
    return (prediction - target).pow(2).mean()


def test_rescaling_outputs_and_targets_leaves_normalized_influence_unchanged():
    model = make("circular_conv")
    x, y = data()
    factor = 10.0
    metric = GaussNewton(tol=1e-13, max_iter=500)
    absolute = GaussNewton(damping=1e-3, tol=1e-13, max_iter=500)
    base, scaled = [
        {
            name: sc.orbit_influence(Scaled(model, c), mse, x, c * y, D4, PSEUDO, metric=m)
            for name, m in (("relative", metric), ("absolute", absolute))
        }
        for c in (1.0, factor)
    ]
    # MSE gradients scale by c², η and λ by c², so H = bᵀχ⁻¹a scales by c⁴/c² = c²
    assert scaled["relative"].info["damping"] == pytest.approx(
        factor**2 * base["relative"].info["damping"], rel=1e-12
    )
    assert_normwise_close(
        scaled["relative"].matrix, factor**2 * base["relative"].matrix, TOL["fp64"]["rtol"]
    )
    torch.testing.assert_close(
        scaled["relative"].normalized, base["relative"].normalized, **TOL["fp64"]
    )
    torch.testing.assert_close(scaled["relative"].ratio, base["relative"].ratio, **TOL["fp64"])
    # an absolute λ does not follow the scale: the normalized influence moves
    moved = (scaled["absolute"].normalized - base["absolute"].normalized).abs().max()
    assert moved > 1e-3


def test_orbit_batch_matches_a_dense_orbit_chi():
    torch.manual_seed(0)
    model = cast(zero_padded_conv(), torch.float64)
    x, y = data()
    elements = ["e", "r", "s", "sr3"]
    metric = GaussNewton(batch="orbit", tol=1e-12, max_iter=300)
    assert not metric.element_separable
    result = measure(model, x, y, metric, elements=elements)
    expected = dense_influence(model, x, y, elements, result.info["damping"], batch="orbit")
    assert_normwise_close(result.matrix, expected, TOL["fp64"]["rtol"])
    probes = dense_influence(model, x, y, elements, result.info["damping"])
    assert not torch.allclose(expected, probes, rtol=1e-3)  # a different χ


def test_orbit_batch_equals_probe_batch_when_the_group_permutes_the_jacobian():
    # circular convolutions commute with integer shifts: J(g·x) = g J(x), so η(g·x) = η(x)
    model = make("circular_conv")
    x, y = data()
    metrics = [GaussNewton(damping=1e-3, batch=b, tol=1e-13, max_iter=500) for b in BATCHES]
    probes, orbit = [
        sc.orbit_influence(model, sc.smse, x, y, SHIFTS, SCALAR, metric=m) for m in metrics
    ]
    assert_normwise_close(orbit.matrix, probes.matrix, TOL["fp64"]["rtol"])


BATCHES = ("probes", "orbit")


def test_cap_warns_and_reports_the_residual():
    model = make("mlp")
    x, y = data()
    for preconditioner, remedy in (("nystrom", "max_rank"), (None, "preconditioner='nystrom'")):
        metric = GaussNewton(
            1e-6, preconditioner=preconditioner, tol=1e-14, max_iter=2, max_rank=16
        )
        with pytest.warns(RuntimeWarning, match=f"max_iter=2 with relative residual .*{remedy}"):
            result = measure(model, x, y, metric, elements=["e"])
        assert result.info["solver_iterations"] == 2
        assert 1e-14 < result.info["solver_residual"] < 1


def test_cg_stops_at_its_tolerance():
    model = make("circular_conv")
    x, y = data()
    expected = dense_influence(model, x, y, ["e"], 1e-3)
    metric = GaussNewton(damping=1e-3, tol=1e-2, preconditioner=None)
    loose = measure(model, x, y, metric, elements=["e"])
    assert loose.info["solver_residual"] <= 1e-2
    error = (loose.matrix - expected).abs().max() / expected.abs().max()
    assert error > 1e-10  # stopped early: not the exact answer


def test_batched_cg_solves_each_row_with_and_without_a_preconditioner():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    spd = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    rhs = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    rhs[1] = 0
    plain = batched_cg(lambda v: v @ spd, rhs, 1e-13, 100)
    torch.testing.assert_close(plain.solution, torch.linalg.solve(spd, rhs.T).T, **TOL["fp64"])
    assert plain.solution[1].abs().max() == 0 and plain.residual <= 1e-12 and plain.converged
    inverse = torch.linalg.inv(spd)
    exact = batched_cg(lambda v: v @ spd, rhs, 1e-13, 100, lambda v: v @ inverse)
    assert exact.iterations == 1  # an exact preconditioner solves in one step
    torch.testing.assert_close(exact.solution, plain.solution, **TOL["fp64"])


def test_cg_needs_no_bra_self_unless_cosine():
    model = make("circular_conv")
    x, y = data()
    metric = GaussNewton(tol=1e-10)
    standard = measure(model, x, y, metric, elements=["e", "r"])
    assert torch.isnan(standard.bra_self).all()
    with pytest.raises(ValueError, match="recompute with normalization='cosine'"):
        _ = standard.with_normalization("cosine").normalized
    cosine = measure(model, x, y, metric, elements=["e", "r"], normalization="cosine")
    assert torch.isfinite(cosine.normalized).all() and cosine.normalized.abs().max() <= 1 + 1e-9


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


def test_zero_trace_asks_for_an_absolute_damping():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(1, 1, 3, padding=1).double()
            self.unused = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return self.used(x)

    x, _ = data()
    fmodel = FunctionalModel(Unused(), ["unused"])
    kets = torch.zeros(len(x), 3, dtype=torch.float64)
    problem = InfluenceProblem(fmodel, x, kets, lambda: iter(()), 1)
    with pytest.raises(ValueError, match="do not depend on the selected parameters"):
        GaussNewton().reduce(problem)
    reduced = GaussNewton(damping=1.0).reduce(problem)  # χ = I: well defined
    assert reduced.matrix.abs().max() == 0


# ---------------------------------------------------------------- the Galerkin approximation


def test_subspace_is_exact_when_the_gradients_span_parameter_space():
    # P = 10 (one 3×3 conv + bias); 4 kets + 4·8 bras span R^10, so Galerkin = the full inverse
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    x, y = data()
    result = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=GaussNewton(solver="subspace")
    )
    assert result.info["subspace_rank"] == 10
    assert set(result.info) == INFO_KEYS | {"subspace_rank", "subspace_columns"}
    expected = dense_influence(model, x, y, D4.elements, result.info["damping"])
    torch.testing.assert_close(result.matrix, expected, **TOL["fp64"])
    assert result.info["solver_residual"] <= 1e-10


@pytest.mark.parametrize("name", ["mlp", "spectral"])
def test_subspace_is_the_galerkin_inverse_when_it_does_not_span(name):
    model = make(name)  # spectral: complex parameters
    x, y = data()
    elements = ["e", "r", "s"]
    metric = GaussNewton(solver="subspace")
    result = measure(model, x, y, metric, elements=elements)
    damping = result.info["damping"]
    galerkin = dense_influence(model, x, y, elements, damping, galerkin=True)
    full = dense_influence(model, x, y, elements, damping)
    torch.testing.assert_close(result.matrix, galerkin, **TOL["fp64"])
    if name == "mlp":  # P = 912 > 4 + 4·3 gradients
        assert not torch.allclose(result.matrix, full, rtol=1e-3)  # not the full inverse
        assert result.info["solver_residual"] > 1e-3  # and its residual says so


def test_subspace_identity_row_depends_on_the_element_list():
    model = make("mlp")
    x, y = data()
    metric = GaussNewton(solver="subspace")
    alone = measure(model, x, y, metric, elements=["e"])
    with_others = measure(model, x, y, metric, elements=["e", "r", "s"])
    assert not torch.allclose(alone.matrix[0], with_others.matrix[0], rtol=1e-3)
    reference = GaussNewton()
    exact = [measure(model, x, y, reference, elements=e) for e in (["e"], ["e", "r", "s"])]
    torch.testing.assert_close(exact[0].matrix[0], exact[1].matrix[0], **TOL["fp64"])


def test_output_scale_replaces_one_over_f():
    model = make("circular_conv")
    x, y = data()
    num_outputs = x.numel()
    run = [
        measure(model, x, y, GaussNewton(damping=1e-4, solver="subspace", output_scale=s))
        for s in (None, 1.0 / num_outputs, 2.0 / num_outputs)
    ]
    torch.testing.assert_close(run[0].matrix, run[1].matrix, **TOL["fp64"])
    assert not torch.allclose(run[0].matrix, run[2].matrix)


# ---------------------------------------------------------------- construction


def test_separability_and_repr():
    assert GaussNewton().element_separable
    assert GaussNewton(preconditioner=None).element_separable
    assert not GaussNewton(batch="orbit").element_separable
    assert not GaussNewton(solver="subspace").element_separable
    text = repr(GaussNewton(damping=1e-4, output_scale=1.0, batch="orbit"))
    assert text.startswith("GaussNewton(damping=0.0001, output_scale=1.0, solver='cg'")
    assert "relative_damping" not in text and "batch='orbit'" in text
    assert (
        eval(repr(GaussNewton()), {"GaussNewton": GaussNewton}).__dict__ == GaussNewton().__dict__
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"solver": "lu"},
            r"unknown Gauss–Newton solver 'lu'; expected one of \['cg', 'subspace', 'ekfac'\]",
        ),
        ({"preconditioner": "jacobi"}, "unknown preconditioner 'jacobi'"),
        ({"batch": "all"}, r"expected one of \['probes', 'orbit'\]"),
        ({"damping": 0.0}, r"damping \(absolute λ; χ must be invertible\) must be a finite"),
        ({"relative_damping": -1.0}, "relative_damping .* must be a finite number > 0"),
        ({"relative_damping": float("inf")}, "got inf"),
        ({"relative_damping": 0.1, "damping": 1e-4}, "pass only one"),
        ({"tol": 0}, r"tol .* > 0, got 0"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
        ({"max_iter": 2.5}, "max_iter must be an integer"),
        ({"max_rank": True}, "max_rank must be an integer"),
        ({"trace_probes": 0}, "trace_probes must be an integer"),
        ({"energy_cutoff": 1.0}, r"energy_cutoff must be in \[0, 1\)"),
        ({"output_scale": -1.0}, "output_scale"),
        ({"seed": "0"}, "seed must be an integer"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussNewton(**kwargs)


def test_orbit_batch_needs_the_orbit_inputs():
    model = make("circular_conv")
    x, _ = data()
    kets = torch.zeros(len(x), sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    problem = InfluenceProblem(FunctionalModel(model), x, kets, lambda: iter(()), 1)
    with pytest.raises(ValueError, match="no orbit_inputs; use batch='probes'"):
        GaussNewton(batch="orbit").reduce(problem)
