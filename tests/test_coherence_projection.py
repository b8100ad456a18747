"""Projected per-sample gradients: ``H ≈ (S M^{-1/2} b)ᵀ (S M^{-1/2} a)`` with a seeded ``S``.

Exactness (fp64): the Kronecker projection computed through forward hooks equals the dense
Kronecker matrix applied to the materialized gradient; ``dim ≥ P`` reproduces the exact engine;
the Adam metric's diagonal enters as ``σ = diag(M)^{-1/2}``. Statistics (seeded, deterministic):
inner products are unbiased; on the small U-Net and FNO presets the coherence ratio moves by at
most 0.02 at ``d = 2^16`` (the default ``2^20`` exceeds their parameter count, so it measures
them exactly). Refusals: the Gauss–Newton metric, bad settings, a weight
used outside its layer's forward.
"""

import pytest
import torch
from helpers.zoo import PSEUDO, SCALAR, GroupAveraged, circular_conv, data, make, stepped_adam
from torch import nn

import symcoherence as sc
from symcoherence.coherence import GaussNewton, Identity, MeasurementSpec, Projection, measure
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.projection import DEFAULT_DIM, allocate
from symcoherence.coherence.metrics.diagonal import Adam, projection_scale
from symcoherence.models import FNO2d, UNet2d
from symcoherence.testing import TOLERANCES

FP64 = TOLERANCES["fp64"]
ELEMENTS = ["e", "r", "s"]
HOOKED = ["down.weight", "mix.weight"]  # at Projection(dim=200): a strided conv and a Linear


class Mixer(nn.Module):
    """Circular convolutions around a stride-2 layer and a channel-mixing Linear."""

    def __init__(self):
        super().__init__()
        self.lift = nn.Conv2d(1, 16, 3, padding=1, padding_mode="circular")
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, padding_mode="circular")
        self.mix = nn.Linear(32, 32)
        self.up = nn.Upsample(scale_factor=2)
        self.head = nn.Conv2d(32, 1, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        h = torch.tanh(self.down(torch.tanh(self.lift(x))))
        h = torch.tanh(self.mix(h.movedim(1, -1))).movedim(-1, 1)
        return self.head(self.up(h))


class ReusedWeight(Mixer):
    """Also reads ``mix.weight`` outside ``mix``'s forward, which forward hooks cannot see."""

    def forward(self, x):
        return super().forward(x) + self.mix.weight.mean()


def mixer(cls=Mixer, dtype=torch.float64):
    torch.manual_seed(0)
    return cls().to(dtype)


def bound(model, dim, metric=None, seed=0):
    fmodel = FunctionalModel(model)
    return Projection(dim=dim, seed=seed).bind(
        model, fmodel, projection_scale(metric or Identity(), fmodel)
    ), fmodel


def flat(grad):
    grad = torch.view_as_real(grad) if grad.is_complex() else grad
    return grad.reshape(grad.shape[0], -1)


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["identity", "adam"])
def test_hooked_kronecker_projection_equals_the_dense_kronecker_matrix(metric):
    model = mixer()
    x, y = data(n=5, grid=8)
    scale = None
    optimizer = None
    if metric == "adam":
        optimizer = stepped_adam(model, x, y)
    source, fmodel = bound(model, 200, Adam(optimizer) if optimizer else None)
    if optimizer is not None:
        scale = Adam(optimizer).inverse_diagonal(fmodel).sqrt()
    assert [n for n in source.plans if source.factors(n) is not None] == HOOKED
    got, norms = source.flat_grad_matrix(sc.smse, x, y, chunk_size=2)[1:3]
    grads = sc.per_sample_grads(model, sc.smse, x, y)
    for name, grad in grads.items():
        g = flat(grad)
        factors = source.factors(name)
        if factors is None:  # count sketch: one signed entry (times σ) per column
            dense = source.matrix(name)
            assert bool(((dense != 0).sum(0) == 1).all())
        else:  # vec(P_outᵀ (σ ⊙ G) Qᵀ) = (P_outᵀ ⊗ Q) vec(σ ⊙ G), row-major
            out_factor, in_factor = factors
            dense = torch.kron(out_factor.T.contiguous(), in_factor)
            if scale is not None:
                g = g * scale[fmodel.layout.slices[name]]
        expected = g @ dense.T
        torch.testing.assert_close(got[:, source.layout.slices[name]], expected, **FP64)
    # the Euclidean norms: exact over sketched tensors, the unscaled Kronecker projection otherwise
    squares = 0.0
    for name, grad in grads.items():
        g = flat(grad)
        if (factors := source.factors(name)) is not None:
            g = g @ torch.kron(factors[0].T.contiguous(), factors[1]).T
        squares = squares + g.pow(2).sum(-1)
    torch.testing.assert_close(norms, squares.sqrt(), **FP64)


@pytest.mark.parametrize("name", ["mixer", "spectral", "group_norm"])
@pytest.mark.parametrize("metric", ["identity", "adam"])
def test_a_dimension_of_at_least_p_reproduces_the_exact_engine(name, metric):
    model = mixer() if name == "mixer" else make(name)
    x, y = data(n=5, grid=8)
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, elements=ELEMENTS, metric=metric)
    if metric == "adam":
        kwargs["optimizer"] = stepped_adam(model, x, y)
    exact = sc.orbit_influence(model, sc.smse, x, y, **kwargs)
    size = FunctionalModel(model).layout.size
    projected = sc.orbit_influence(model, sc.smse, x, y, projection=Projection(dim=size), **kwargs)
    assert projected.info["projection_dim"] == size
    torch.testing.assert_close(projected.matrix, exact.matrix, **FP64)
    torch.testing.assert_close(projected.bra_self, exact.bra_self, **FP64)
    torch.testing.assert_close(projected.bra_norm, exact.bra_norm, **FP64)
    torch.testing.assert_close(projected.transfer, exact.transfer, **FP64)


def test_engine_blocks_are_the_projections_of_the_exact_gradients():
    model = make("spectral")  # complex weights, sketched as real pairs
    x, y = data(n=4)
    source, _ = bound(model, 6)
    projected = source.flat_grad_matrix(sc.smse, x, y).rows
    grads = sc.per_sample_grads(model, sc.smse, x, y)
    torch.testing.assert_close(projected, source.project(grads), **FP64)
    dense = torch.cat([flat(grads[n]) @ source.matrix(n).T for n in grads], dim=1)
    torch.testing.assert_close(projected, dense, **FP64)


def test_exactly_equivariant_models_keep_ratio_one():
    torch.manual_seed(0)
    group = sc.groups.D4()
    model = GroupAveraged(circular_conv(), group, SCALAR).double()
    x, y = data(n=5)
    result = sc.orbit_influence(
        model, sc.smse, x, y, group, SCALAR, projection=Projection(dim=8, seed=3)
    )
    torch.testing.assert_close(result.ratio, torch.ones_like(result.ratio), **FP64)


def test_breakdown_by_module_sums_to_the_matrix():
    model = mixer()
    x, y = data(n=4, grid=8)
    kwargs = dict(group=sc.groups.C4(), field_type=PSEUDO, projection=Projection(dim=200))
    result = sc.orbit_influence(model, sc.smse, x, y, breakdown=True, **kwargs)
    assert set(result.by_module) == {"lift", "down", "mix", "head"}
    torch.testing.assert_close(sum(result.by_module.values()), result.matrix, **FP64)


# --- statistics ------------------------------------------------------------------------------


def test_allocation_levels_the_large_tensors():
    assert allocate([10, 1000, 5000], 1000) == [10, 495, 495]
    assert allocate([10, 20], 100) == [10, 20]  # everything fits: kept exactly
    assert sum(allocate([7, 300, 300, 5000, 40], 555)) <= 555


def test_projected_inner_products_are_unbiased():
    """Seeded: the mean over 400 draws of ⟨S a, S b⟩ lies within 4 standard errors of aᵀb."""
    model = mixer()
    x, y = data(n=2, grid=8)
    grads = sc.per_sample_grads(model, sc.smse, x, y)
    exact = {name: flat(g) for name, g in grads.items()}
    draws = {name: [] for name in [*HOOKED, "lift.weight"]}  # Kronecker and sketch blocks
    for seed in range(400):
        source, _ = bound(model, 200, seed=seed)
        projected = source.project(grads)
        for name in draws:
            part = projected[:, source.layout.slices[name]]
            draws[name].append(part[0] @ part[1])
    for name, values in draws.items():
        values = torch.stack(values)
        target = exact[name][0] @ exact[name][1]
        error = float((values.mean() - target).abs())
        assert error <= 4 * float(values.std()) / len(values) ** 0.5, name


def test_projections_are_seeded_and_deterministic():
    model = mixer()
    x, y = data(n=4, grid=8)
    kwargs = dict(group=sc.groups.C4(), field_type=PSEUDO)
    first = sc.orbit_influence(model, sc.smse, x, y, projection=Projection(dim=200), **kwargs)
    again = sc.orbit_influence(model, sc.smse, x, y, projection=Projection(dim=200), **kwargs)
    other = sc.orbit_influence(
        model, sc.smse, x, y, projection=Projection(dim=200, seed=1), **kwargs
    )
    torch.testing.assert_close(again.matrix, first.matrix, **TOLERANCES["exact"])
    assert not torch.allclose(other.matrix, first.matrix)
    assert all(not module._forward_hooks for module in model.modules())  # hooks removed


@pytest.mark.parametrize("name", ["unet", "fno"])
def test_ratio_error_on_the_small_presets(name):
    torch.manual_seed(0)
    model = {"unet": UNet2d, "fno": FNO2d}[name](1, 1, preset="small").eval()
    # the FNO's untrained gradients sit almost wholly in its output bias, which is kept
    # exactly; its spectral weights alone (262 144 numbers, all count-sketched) test the sketch
    spectral = (lambda n, p: "spectral" in n) if name == "fno" else None
    x, y = data(n=16, grid=32, dtype=torch.float32)
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, parameter_filter=spectral)
    exact = sc.orbit_influence(model, sc.smse, x, y, **kwargs)
    size = FunctionalModel(model, spectral).layout.size
    assert size <= DEFAULT_DIM  # the default measures these presets exactly; project to 2^16
    projection = Projection(dim=2**16)
    projected = sc.orbit_influence(model, sc.smse, x, y, projection=projection, **kwargs)
    assert projected.info["projection_dim"] <= 2**16 <= size / 4
    assert float((projected.ratio - exact.ratio).abs().max()) <= 0.02


# --- settings and refusals -------------------------------------------------------------------


def test_gauss_newton_is_refused():
    model = mixer()
    x, y = data(n=4, grid=8)
    for metric in ("gauss_newton", GaussNewton()):
        with pytest.raises(ValueError, match="full parameter space"):
            sc.orbit_influence(
                model, sc.smse, x, y, sc.groups.C4(), PSEUDO, metric=metric, projection=Projection()
            )
        with pytest.raises(ValueError, match="only diagonal metrics"):
            MeasurementSpec(
                group="C4", field_type=["scalar"], metric=metric, projection=Projection()
            )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "dim must be an integer >= 1"),
        ({"dim": 2.5}, ValueError, "dim must be an integer >= 1"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"seed": True}, ValueError, "seed must be an integer >= 0"),
    ],
)
def test_projection_settings_are_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        Projection(**kwargs)


def test_a_dimension_below_the_tensor_count_is_refused():
    with pytest.raises(ValueError, match="cannot give each of the 8"):
        bound(mixer(), 7)


def test_spec_takes_a_projection_and_measure_uses_it():
    with pytest.raises(TypeError, match="Projection"):
        MeasurementSpec(group="C4", field_type=["scalar"], projection=4096)
    model = mixer()
    x, y = data(n=4, grid=8)
    spec = MeasurementSpec(group="C4", field_type=["pseudoscalar"], projection=Projection(dim=200))
    assert spec.record()["projection"] == {"dim": 200, "seed": 0}
    result = measure(model, sc.smse, x, y, spec)
    direct = sc.orbit_influence(
        model, sc.smse, x, y, sc.groups.C4(), PSEUDO, projection=Projection(dim=200)
    )
    torch.testing.assert_close(result.influence.matrix, direct.matrix, **TOLERANCES["exact"])
    assert result.influence.info["projection_dim"] == direct.info["projection_dim"] <= 200


def test_a_weight_used_outside_its_layer_is_reported():
    model = mixer(ReusedWeight)
    x, y = data(n=4, grid=8)
    with pytest.raises(ValueError, match=r"\['mix.weight'\] differ from the projection"):
        sc.orbit_influence(model, sc.smse, x, y, sc.groups.C4(), PSEUDO, projection=Projection(200))
    exact = sc.orbit_influence(model, sc.smse, x, y, sc.groups.C4(), PSEUDO)  # the fix it names
    assert torch.isfinite(exact.matrix).all()
