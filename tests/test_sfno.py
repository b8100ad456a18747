"""SFNO adapter: exact zonal strides per scale factor, breaks, positional embeddings, torch.func."""

import math

import pytest
import torch
from torch.func import functional_call, grad, jvp, vjp, vmap

import symcoherence as sc
from symcoherence.groups import EquatorialReflection, FieldType, ZonalShifts
from symcoherence.models.base import build_from_spec
from symcoherence.models.sfno import SFNO

NLAT, NLON = 17, 32
UVH = FieldType(["vector", "scalar"])
BREAK = 1e-3  # a broken symmetry moves the output by far more than float32 round-off


def shift_errors(model, x, shifts):
    """``max|f(roll(x, k)) − roll(f(x), k)| / max|f(x)|`` for each ``k``, in one batched call."""
    rolled = torch.cat([torch.roll(x, k, dims=-1) for k in (0, *shifts)])
    with torch.no_grad():
        out = model(rolled).unflatten(0, (len(shifts) + 1, x.shape[0]))
    scale = out[0].abs().max()
    return [
        ((out[i + 1] - torch.roll(out[0], k, dims=-1)).abs().max() / scale).item()
        for i, k in enumerate(shifts)
    ]


def relative_error(model, x, shift):
    return shift_errors(model, x, [shift])[0]


def build(**kwargs):
    base = {"nlat": NLAT, "nlon": NLON, "embed_dim": 8, "num_layers": 3}
    return SFNO(3, 3, **{**base, **kwargs})


# scale factor -> internal width w = nlon // s -> exact shifts: multiples of nlon / gcd(nlon, w).
STRIDES = {1: 1, 2: 2, 3: 16, 4: 4}


@pytest.mark.parametrize("scale_factor", sorted(STRIDES))
def test_exact_zonal_shifts_are_the_multiples_of_the_internal_stride(scale_factor, tol):
    model = build(scale_factor=scale_factor)
    stride = STRIDES[scale_factor]
    assert model.zonal_stride == stride
    assert model.internal_shape[1] == NLON // scale_factor
    assert stride == NLON // math.gcd(NLON, NLON // scale_factor)
    x = torch.randn(2, 3, NLAT, NLON)
    for shift, error in zip(range(1, NLON), shift_errors(model, x, range(1, NLON)), strict=True):
        if shift % stride == 0:
            assert error < tol["fp32"]["rtol"], (shift, error)
        else:
            assert error > BREAK, (shift, error)


def test_a_single_block_commutes_with_every_shift(tol):
    model = build(scale_factor=4, num_layers=1)
    assert model.zonal_stride == 1
    x = torch.randn(2, 3, NLAT, NLON)
    assert max(shift_errors(model, x, range(1, NLON))) < tol["fp32"]["rtol"]


@pytest.mark.parametrize("embedding", [True, "spectral", "sequence"])
def test_longitude_dependent_embeddings_break_every_shift(embedding):
    model = build(scale_factor=2, positional_embedding=embedding)
    assert model.zonal_stride is None
    x = torch.randn(2, 3, NLAT, NLON)
    assert min(shift_errors(model, x, range(1, NLON))) > BREAK


def test_learnable_embeddings_latitude_only_keeps_the_shifts(tol):
    x = torch.randn(2, 3, NLAT, NLON)
    lat = build(scale_factor=2, positional_embedding="learnable lat")
    latlon = build(scale_factor=2, positional_embedding="learnable latlon")
    with torch.no_grad():  # as after training: a non-zero embedding
        for model in (lat, latlon):
            model.network.pos_embed.position_embeddings.normal_()
    assert lat.zonal_stride == 2 and latlon.zonal_stride is None
    assert relative_error(lat, x, 2) < tol["fp32"]["rtol"]
    assert relative_error(latlon, x, 2) > BREAK


def test_the_physical_mirror_is_not_built_in(tol):
    model = build(scale_factor=2)
    mirror = EquatorialReflection()
    x = torch.randn(2, 3, NLAT, NLON)
    with torch.no_grad():
        y = model(x)
        for field_type, exact in ((FieldType(["scalar"] * 3), True), (UVH, False)):
            moved = model(mirror.act("s", x, field_type))
            expected = mirror.act("s", y, field_type)
            error = ((moved - expected).abs().max() / expected.abs().max()).item()
            assert (error < tol["fp32"]["rtol"]) if exact else (error > BREAK), field_type


def test_exact_shifts_give_coherence_ratio_one_and_others_do_not():
    torch.manual_seed(1)
    model = build(scale_factor=2, num_layers=2, embed_dim=4)
    x, y = torch.randn(6, 3, NLAT, NLON), torch.randn(6, 3, NLAT, NLON)
    exact = sc.orbit_influence(model, sc.smse, x, y, ZonalShifts(NLON, shifts=[2, 6, 16]), UVH)
    ratios = {k: v for k, v in exact.summary().items() if "/ratio/" in k and not k.endswith("/e")}
    assert len(ratios) == 3
    for key, value in ratios.items():
        assert value == pytest.approx(1.0, abs=1e-4), key
    odd = sc.orbit_influence(model, sc.smse, x, y, ZonalShifts(NLON, shifts=[1, 3]), UVH)
    assert max(abs(v - 1) for k, v in odd.summary().items() if "/ratio/" in k) > 1e-2


def test_per_sample_gradients_under_vmap_match_a_loop(tol):
    model = build(scale_factor=2, num_layers=2)
    params = {name: p.detach() for name, p in model.named_parameters()}
    assert all(not p.is_complex() for p in params.values())
    x, y = torch.randn(3, 3, NLAT, NLON), torch.randn(3, 3, NLAT, NLON)

    def loss(p, xi, yi):
        return sc.smse(functional_call(model, p, (xi[None],))[0], yi)

    batched = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for n in range(3):
        model.zero_grad()
        sc.smse(model(x[n : n + 1])[0], y[n]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(batched[name][n], p.grad, **tol["fp32"])


def test_forward_mode_matches_reverse_mode(tol):
    model = build(scale_factor=2, num_layers=2)
    params = {name: p.detach() for name, p in model.named_parameters()}
    x = torch.randn(2, 3, NLAT, NLON)

    def forward(p):
        return functional_call(model, p, (x,))

    tangents = {name: torch.randn_like(p) for name, p in params.items()}
    cotangent = torch.randn(2, 3, NLAT, NLON)
    _, forward_derivative = jvp(forward, (params,), (tangents,))
    _, pullback = vjp(forward, params)
    (reverse,) = pullback(cotangent)
    lhs = (forward_derivative * cotangent).sum()
    rhs = sum((reverse[name] * tangents[name]).sum() for name in params)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)  # sums of ~10⁴ float32 products
    stacked = {name: torch.stack([t, 2 * t]) for name, t in tangents.items()}
    batched = vmap(lambda t: jvp(forward, (params,), (t,))[1])(stacked)
    # vmap reorders float32 sums: the fp32 row relative to the output's magnitude.
    scale = forward_derivative.abs().max().item()
    atol = tol["fp32"]["rtol"] * scale
    torch.testing.assert_close(batched[1], 2 * forward_derivative, rtol=0, atol=2 * atol)


def test_spec_rebuilds_the_model_and_presets():
    model = build(scale_factor=4, positional_embedding="learnable lat")
    rebuilt = build_from_spec(model.spec())
    assert type(rebuilt) is SFNO and rebuilt.spec() == model.spec()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, NLAT, NLON)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    paper = SFNO(3, 3, preset="paper", nlat=NLAT, nlon=NLON, embed_dim=8)
    assert paper.scale_factor == 3 and paper.num_layers == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"positional_embedding": "rope"}, "positional_embedding must be"),
        ({"scale_factor": 40}, "holds no spectral mode"),
        ({"scale_factor": 0}, "scale_factor must be a positive integer"),
        ({"grid": "healpix"}, "grid must be one of"),
        ({"activation": "tanh"}, "activation must be"),
        ({"preset": "huge"}, "unknown preset"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        SFNO(3, 2, residual_prediction=True)


def test_input_errors():
    model = build()
    with pytest.raises(ValueError, match="built for an nlat×nlon = 17×32"):
        model(torch.randn(1, 3, 16, 32))
    with pytest.raises(ValueError, match=r"expects inputs \(B, 3, H, W\)"):
        model(torch.randn(1, 2, NLAT, NLON))
