"""Kronecker-factored Gauss–Newton (K-FAC / EK-FAC) against dense J, η and χ⁻¹ in float64."""

import pytest
import torch
import torch.nn.functional as F
from helpers.zoo import PSEUDO, SCALAR, cast, data, make
from torch import nn

import symcoherence as sc
from symcoherence.coherence import GaussNewton
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.metrics import kronecker
from symcoherence.coherence.metrics.kronecker import conv_patches, fit_curvature
from symcoherence.models.fno import FNO2d, SpectralConv2d
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing.reference import dense_gauss_newton, reference_grads

D4 = sc.groups.D4()
SHIFTS = sc.groups.Shifts(line=("x", [1, 2]))
RTOL = TOL["fp64"]["rtol"]


def fit(model, batches, vectors=None, seed=0, correction=True):
    """The curvature of ``η = JᵀJ/F`` over ``batches`` (``vectors=None``: exact factors)."""
    outputs = sum(model(b).numel() for b in batches)
    generator = torch.Generator().manual_seed(seed)
    return fit_curvature(
        FunctionalModel(model), batches, 1.0 / outputs, vectors, generator, correction
    )


def eta_of(model, batches):
    """Dense ``η = (1/F) Σ J_bᵀ J_b`` over the stacked batches."""
    return dense_gauss_newton(model, [torch.cat(batches)], list(model.parameters()))


def small_net(seed, padding_mode="circular", stride=2):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, padding_mode=padding_mode),
        nn.GroupNorm(1, 3),
        nn.GELU(),
        nn.Conv2d(3, 2, 3, padding=1, padding_mode=padding_mode, stride=stride),
        nn.Tanh(),
        nn.Conv2d(2, 1, 1),
    )
    return net.double()


def assert_close(actual, expected, rtol=RTOL):
    error = float((actual - expected).norm() / expected.norm())
    assert error <= rtol, f"relative Frobenius error {error:.2e} > {rtol:.0e}"


# ---------------------------------------------------------------- exact cases


@pytest.mark.parametrize("correction", [True, False])
def test_kfac_is_exact_on_one_linear_layer_and_one_sample(correction):
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    curvature = fit(net, [x], correction=correction)
    assert_close(curvature.dense(), eta_of(net, [x]))


@pytest.mark.parametrize("padding_mode", ["circular", "zeros", "reflect"])
def test_kfac_is_exact_for_a_conv_used_as_the_per_pixel_output_layer(padding_mode):
    # y_t = W u_t + b with u_t the padded patch: η = Σ_{n,t} u uᵀ ⊗ I/F = A ⊗ G exactly
    torch.manual_seed(1)
    net = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode).double()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    curvature = fit(net, [x], correction=False)
    assert curvature.layers == 1
    assert_close(curvature.dense(), eta_of(net, [x]))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        nn.Conv2d(2, 3, 3, padding=2, dilation=2, padding_mode="circular", stride=2),
        nn.Conv2d(2, 3, 3, padding="same", padding_mode="replicate"),
        nn.Conv2d(2, 3, (3, 1), padding=(1, 0)),
    ],
)
def test_padded_patches_reproduce_autograd_per_sample_gradients(conv):
    conv = conv.double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    delta = torch.randn_like(conv(x))
    patches = conv_patches(conv, x)  # (n, C·k·k, T)
    hooks = torch.einsum("not,nit->noi", delta.flatten(2), patches)
    for n in range(4):
        (weight,) = torch.autograd.grad((conv(x[n : n + 1]) * delta[n : n + 1]).sum(), conv.weight)
        torch.testing.assert_close(hooks[n], weight.reshape(3, -1), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        nn.Conv2d(2, 3, 3, padding=2, dilation=2, padding_mode="circular", stride=2),
        nn.Conv2d(2, 3, (3, 5), padding=(1, 2), stride=(2, 1), padding_mode="reflect"),
        nn.Conv2d(2, 3, 3, padding="same"),
    ],
)
def test_patches_at_chosen_positions_are_those_of_the_full_unfold(conv):
    x = torch.randn(3, 2, 7, 9)
    full = conv_patches(conv, x)
    positions = torch.randperm(full.shape[2], generator=torch.Generator().manual_seed(0))[:5]
    assert torch.equal(conv_patches(conv, x, positions), full[:, :, positions])


def test_circular_patches_differ_from_zero_padded_ones():
    """A conv that pads circularly must not be unfolded with zeros (published K-FAC code does)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular").double()
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    zero = F.unfold(x, 3, padding=1)
    assert not torch.allclose(conv_patches(conv, x), zero)


# ---------------------------------------------------------------- the eigenvalue correction


@pytest.mark.parametrize("factor_positions", [None, 5])
def test_correction_is_the_diagonal_of_eta_in_the_kronecker_eigenbasis_and_keeps_the_trace(
    factor_positions, monkeypatch
):
    """Also when ``A`` is accumulated at a random subset of positions (``FACTOR_POSITIONS``):
    the basis changes, the correction and the trace stay exact."""
    net = small_net(0)
    x, _ = data(n=3)
    eta = eta_of(net, [x])
    full = fit(net, [x])
    if factor_positions is not None:
        monkeypatch.setattr(kronecker, "FACTOR_POSITIONS", factor_positions)
    curvature = fit(net, [x])
    assert curvature.layers == 3 and len(curvature.blocks) == 1  # the GroupNorm's dense block
    if factor_positions is not None:
        for layer, exact in zip(curvature.kronecker, full.kronecker, strict=True):
            assert layer.positions == 3 * factor_positions  # every layer has more positions
            assert not torch.allclose(layer.a, exact.a)
    for layer in curvature.kronecker:
        index = layer.columns.reshape(-1)
        basis = torch.kron(layer.qg, layer.qa)
        expected = torch.diag(basis.T @ eta[index[:, None], index] @ basis)
        torch.testing.assert_close(layer.eigenvalues.reshape(-1), expected, rtol=1e-9, atol=1e-14)
    # the hidden convs' K-FAC eigenvalues γ_o a_i are not that diagonal (the per-pixel output
    # layer's are: K-FAC is exact there), so the correction changes them
    for layer in curvature.kronecker[:2]:
        assert (layer.kfac - layer.eigenvalues).abs().max() > 1e-2 * layer.eigenvalues.max()
    block = curvature.blocks[0]
    columns = block.columns[0]
    torch.testing.assert_close(block.matrix[0], eta[columns[:, None], columns], rtol=RTOL, atol=0)
    trace = float(eta.trace())
    assert curvature.trace == pytest.approx(trace, rel=RTOL)
    assert float(curvature.dense().trace()) == pytest.approx(trace, rel=RTOL)


def test_a_group_averaged_model_is_covered_with_its_copies_as_positions():
    """GroupAveraged runs the |G| copies as one batch: the factors see them as more positions, the
    correction and the trace come from the per-sample pseudo-gradients and stay exact."""
    net = sc.models.GroupAveraged(small_net(0, stride=1), D4, SCALAR).double()
    x, _ = data(n=2)
    eta = eta_of(net, [x])
    curvature = fit(net, [x])
    for layer in curvature.kronecker:
        index = layer.columns.reshape(-1)
        basis = torch.kron(layer.qg, layer.qa)
        expected = torch.diag(basis.T @ eta[index[:, None], index] @ basis)
        torch.testing.assert_close(layer.eigenvalues.reshape(-1), expected, rtol=1e-9, atol=1e-14)
    assert curvature.trace == pytest.approx(float(eta.trace()), rel=RTOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ekfac_is_frobenius_closer_to_eta_than_kfac(seed):
    net = small_net(seed, padding_mode="zeros" if seed == 2 else "circular")
    x, _ = data(n=3, seed=seed)
    eta = eta_of(net, [x])
    ekfac = (fit(net, [x]).dense() - eta).norm()
    kfac = (fit(net, [x], correction=False).dense() - eta).norm()
    assert ekfac < kfac


def test_random_vectors_estimate_converges_as_one_over_root_s():
    net = small_net(3)
    x, _ = data(n=2)
    exact = fit(net, [x]).dense()

    def error(vectors):
        errors = [(fit(net, [x], vectors, seed=s).dense() - exact).norm() for s in range(8)]
        return float(torch.stack(errors).pow(2).mean().sqrt())

    ratio = error(2) / error(32)
    assert 2.5 < ratio < 6.4, f"error ratio {ratio:.2f} for 16× the vectors (expected ≈ 4)"


# ---------------------------------------------------------------- the metric


def dense_ekfac_influence(model, x, y, elements, curvature, damping, group=D4, kind=PSEUDO):
    params = list(model.parameters())
    chi = curvature.dense() + damping * torch.eye(curvature.size, dtype=torch.float64)
    kets = reference_grads(model, sc.smse, x, y, params)
    bras = torch.stack(
        [reference_grads(model, sc.smse, *group.act_pair(g, x, y, kind), params) for g in elements]
    )
    return torch.einsum("knp,pq,mq->knm", bras, torch.linalg.inv(chi), kets)


@pytest.mark.parametrize("batch", ["probes", "orbit"])
def test_solver_ekfac_is_bra_chi_tilde_inverse_ket_with_the_scale_free_damping(batch):
    net = small_net(4, stride=1)
    x, y = data(n=3)
    elements = ["e", "r", "sr"]
    metric = GaussNewton(solver="ekfac", batch=batch, random_vectors=None)
    result = sc.orbit_influence(net, sc.smse, x, y, D4, PSEUDO, elements=elements, metric=metric)
    batches = [x] if batch == "probes" else [D4.act(g, x, PSEUDO) for g in elements]
    curvature = fit(net, batches)
    damping = metric.relative_damping * curvature.trace / curvature.size
    assert result.info["damping"] == pytest.approx(damping, rel=RTOL)
    assert result.info["trace_estimate"] == pytest.approx(float(eta_of(net, batches).trace()))
    assert result.info["ekfac_layers"] == 3 and result.info["ekfac_fit_bytes"] > 0
    expected = dense_ekfac_influence(net, x, y, elements, curvature, damping)
    assert_close(result.matrix, expected)


def test_orbit_batch_equals_probe_batch_for_a_circular_net_under_shifts():
    net = make("circular_conv")
    x, y = data(n=3)
    kwargs = {"elements": list(SHIFTS.elements)}
    results = [
        sc.orbit_influence(
            net,
            sc.smse,
            x,
            y,
            SHIFTS,
            SCALAR,
            metric=GaussNewton(solver="ekfac", batch=batch, random_vectors=None),
            **kwargs,
        )
        for batch in ("probes", "orbit")
    ]
    assert_close(results[1].matrix, results[0].matrix)


def test_ekfac_preconditioned_cg_reaches_the_dense_solve():
    net = small_net(5, stride=1)
    x, y = data(n=3)
    elements = ["e", "r"]
    metric = GaussNewton(preconditioner="ekfac", tol=1e-12, max_iter=500)
    result = sc.orbit_influence(net, sc.smse, x, y, D4, PSEUDO, elements=elements, metric=metric)
    params = list(net.parameters())
    chi = eta_of(net, [x]) + result.info["damping"] * torch.eye(sum(p.numel() for p in params))
    kets = reference_grads(net, sc.smse, x, y, params)
    bras = torch.stack(
        [reference_grads(net, sc.smse, *D4.act_pair(g, x, y, PSEUDO), params) for g in elements]
    )
    expected = torch.einsum("knp,pq,mq->knm", bras, torch.linalg.inv(chi), kets)
    error = float((result.matrix - expected).abs().max() / expected.abs().max())
    assert error <= 1e-8 and result.info["solver_residual"] <= 1e-12
    assert result.info["preconditioner_rank"] == 0 and "ekfac_fit_seconds" in result.info


def test_fno_spectral_weights_get_exact_per_mode_blocks():
    assert kronecker.CURVATURE_BLOCKS[SpectralConv2d] == (0, 3, 4)  # registered by the FNO
    torch.manual_seed(0)
    net = cast(FNO2d(1, 1, modes=2, width=2, layers=1), torch.float64)
    x, _ = data(n=2)
    eta = eta_of(net, [x])
    curvature = fit(net, [x])
    (spectral,) = [b for b in curvature.blocks if b.columns.shape[0] > 1]
    assert tuple(spectral.columns.shape) == (2 * 2 * 2, 2 * 2 * 2)  # modes × (C_in·C_out·re/im)
    for columns, block in zip(spectral.columns, spectral.matrix, strict=True):
        torch.testing.assert_close(block, eta[columns[:, None], columns], rtol=RTOL, atol=1e-15)
    assert curvature.trace == pytest.approx(float(eta.trace()), rel=RTOL)


# ---------------------------------------------------------------- refusals and settings


class Gain(nn.Module):
    """A layer no hook rule covers."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.gain * x


@pytest.mark.parametrize("settings", [{"solver": "ekfac"}, {"preconditioner": "ekfac"}])
def test_uncovered_layers_are_refused_naming_cg(settings):
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), Gain()).double()
    x, y = data(n=3)
    with pytest.raises(ValueError, match=r"Gain.*use solver='cg'"):
        sc.orbit_influence(net, sc.smse, x, y, D4, PSEUDO, metric=GaussNewton(**settings))


def test_complex_parameters_are_refused_naming_cg():
    net = make("spectral")
    x, y = data(n=3)
    with pytest.raises(ValueError, match="use solver='cg'"):
        sc.orbit_influence(net, sc.smse, x, y, D4, PSEUDO, metric=GaussNewton(solver="ekfac"))


def test_projection_with_ekfac_is_refused():
    x, y = data(n=3)
    with pytest.raises(ValueError, match="projected gradients"):
        sc.orbit_influence(
            make("circular_conv"),
            sc.smse,
            x,
            y,
            D4,
            PSEUDO,
            metric=GaussNewton(solver="ekfac"),
            projection=sc.coherence.Projection(dim=64),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"random_vectors": 0}, "random_vectors must be an integer >= 1"),
        ({"correction": "yes"}, r"correction must be True \(EK-FAC\) or False"),
    ],
)
def test_bad_ekfac_settings_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussNewton(solver="ekfac", **kwargs)
