"""Rank-2 tensor fields: T ↦ M T Mᵀ on every planar group, against the physics of ∇u.

The velocity gradient G_ij = ∂_j u_i of a transformed velocity must equal the transformed G (and
likewise the strain rate); a tensor declared as two vectors, or a velocity whose components are
swapped against the axes, must fail exactly where the theory says.
"""

import math

import pytest
import torch

from symcoherence.data.spectral import spectral_derivative
from symcoherence.groups import (
    D4,
    Affine,
    EquatorialReflection,
    FieldType,
    LatticeGroup,
    Product,
    Shifts,
    from_spec,
)
from symcoherence.models import GroupAveraged

TENSOR = FieldType(["tensor"])
VECTOR = FieldType(["vector"])
ELEMENTS = D4().elements


def _band_limited(channels: int, n: int, modes: int = 3, seed: int = 0) -> torch.Tensor:
    """A float64 field on the periodic unit square with Fourier modes |k| <= modes only."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64) / n
    field = torch.zeros(channels, n, n, dtype=torch.float64)
    for c in range(channels):
        for kx in range(-modes, modes + 1):
            for ky in range(-modes, modes + 1):
                a, b = torch.randn(2, generator=generator, dtype=torch.float64)
                phase = 2 * math.pi * (kx * x[None, :] + ky * x[:, None])
                field[c] += a * torch.cos(phase) + b * torch.sin(phase)
    return field


def velocity_gradient(u: torch.Tensor) -> torch.Tensor:
    """G_ij = ∂_j u_i as channels (∂x u_x, ∂y u_x, ∂x u_y, ∂y u_y) = (G_xx, G_xy, G_yx, G_yy)."""
    ux, uy = u[..., 0:1, :, :], u[..., 1:2, :, :]
    parts = [
        spectral_derivative(ux, -1),
        spectral_derivative(ux, -2),
        spectral_derivative(uy, -1),
        spectral_derivative(uy, -2),
    ]
    return torch.cat(parts, dim=-3)


def strain_rate(u: torch.Tensor) -> torch.Tensor:
    """S = (G + Gᵀ) / 2 as (S_xx, S_xy, S_yx, S_yy)."""
    g = velocity_gradient(u)
    off = (g[..., 1:2, :, :] + g[..., 2:3, :, :]) / 2
    return torch.cat([g[..., 0:1, :, :], off, off, g[..., 3:4, :, :]], dim=-3)


def _matrix(element: str) -> torch.Tensor:
    return torch.tensor(D4().table[element].matrix, dtype=torch.float64)


# ---------------------------------------------------------------------------- the action itself
def test_tensor_kind_has_four_channels_and_repeats():
    assert TENSOR.num_channels == 4
    assert (FieldType(["vector", "tensor"]).repeat(2)).num_channels == 12


@pytest.mark.parametrize("element", ELEMENTS)
def test_channels_transform_as_m_t_mt(element):
    """The channel part of the action is T ↦ M T Mᵀ at every point (M from the element's table)."""
    field = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    acted = D4().act(element, field, TENSOR)
    moved = D4().act(element, field, FieldType(["scalar"] * 4))  # grid part only
    m = _matrix(element)
    expected = torch.einsum("ik,jl,bklyx->bijyx", m, m, moved.unflatten(1, (2, 2))).flatten(1, 2)
    torch.testing.assert_close(acted, expected, rtol=0, atol=0)


def test_quarter_turn_on_a_constant_tensor():
    """r = (x, y) ↦ (−y, x): T'_xx = T_yy, T'_xy = −T_yx, T'_yx = −T_xy, T'_yy = T_xx."""
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    field = values[:, None, None].expand(4, 5, 5)
    out = D4().act("r", field, TENSOR)
    assert torch.equal(out[:, 0, 0], torch.tensor([4.0, -3.0, -2.0, 1.0]))


@pytest.mark.parametrize(
    "group",
    [
        D4(),
        Product(D4(), Shifts([(x, y) for x in range(6) for y in range(6)], period=6)),
        "channel",
    ],
    ids=["D4", "D4xShifts", "channel"],
)
def test_group_laws_hold_exactly_on_tensors(group):
    if group == "channel":  # periodic in x, walls in y: shifts along x and the wall mirror
        mirror = LatticeGroup(
            "Mirrors",
            {"e": Affine(), "sr2": Affine(((1, 0), (0, -1)), (0.0, 5.0))},
            period=(6, None),
        )
        group = Product(mirror, Shifts(line=("x", range(6)), period=(6, None)))
    height = 6
    field = torch.randn(2, 8, height, 6)
    kind = FieldType(["tensor", "vector", "pseudoscalar", "scalar"])
    elements = group.elements[:: max(1, len(group.elements) // 12)]
    for a in elements:
        assert torch.equal(group.act(group.inverse(a), group.act(a, field, kind), kind), field), (
            f"inverse of {a}"
        )
        for b in elements:
            composed = group.act(group.compose(a, b), field, kind)
            assert torch.equal(group.act(a, group.act(b, field, kind), kind), composed), (a, b)
    assert torch.equal(group.act(group.identity, field, kind), field)


def test_symmetric_tensor_stays_symmetric():
    field = torch.randn(4, 7, 7)
    field[2] = field[1]
    for element in ELEMENTS:
        out = D4().act(element, field, TENSOR)
        assert torch.equal(out[1], out[2]), element


def test_equatorial_mirror_flips_the_mixed_components():
    """On the sphere's (east, north) frame the mirror is diag(1, −1): T_uv and T_vu change sign."""
    field = torch.randn(4, 5, 8)
    out = EquatorialReflection().act("s", field, TENSOR)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0])[:, None, None]
    assert torch.equal(out, signs * field.flip(-2))


# ---------------------------------------------------------------------------- physics of ∇u
@pytest.mark.parametrize("n", [16, 15], ids=["even", "odd"])
@pytest.mark.parametrize("element", ELEMENTS)
def test_gradient_of_transformed_velocity_is_transformed_gradient(element, n, tol):
    u = _band_limited(2, n)
    left = velocity_gradient(D4().act(element, u, VECTOR))
    right = D4().act(element, velocity_gradient(u), TENSOR)
    torch.testing.assert_close(left, right, **tol["fp64"])


@pytest.mark.parametrize("element", ELEMENTS)
def test_strain_rate_of_transformed_velocity_is_transformed_strain_rate(element, tol):
    u = _band_limited(2, 16, seed=1)
    group = Product(D4(), Shifts([(3, -2)], period=16))
    name = element if element == "e" else f"{element}|x3y-2"
    left = strain_rate(group.act(name, u, VECTOR))
    right = group.act(name, strain_rate(u), TENSOR)
    torch.testing.assert_close(left, right, **tol["fp64"])


def _fails(element: str, transform_gradient, velocity_of) -> bool:
    u = _band_limited(2, 16, seed=2)
    left = velocity_gradient(velocity_of(D4().act(element, u, VECTOR)))
    right = transform_gradient(element, velocity_gradient(velocity_of(u)))
    return not torch.allclose(left, right, rtol=1e-6, atol=1e-8)


def test_tensor_declared_as_two_vectors_fails_on_every_element_but_e():
    """M T (rows as vectors) is not M T Mᵀ: the wrong kind fails everywhere except at e."""
    two_vectors = FieldType(["vector", "vector"])
    failing = {
        g for g in ELEMENTS if _fails(g, lambda e, t: D4().act(e, t, two_vectors), lambda v: v)
    }
    assert failing == set(ELEMENTS) - {"e"}
    right = {g for g in ELEMENTS if _fails(g, lambda e, t: D4().act(e, t, TENSOR), lambda v: v)}
    assert right == set()


def test_swapped_velocity_components_fail_exactly_on_the_axis_swapping_half():
    """(u_y, u_x) read as (u_x, u_y): a fake failure on {r, r3, s, sr2}, as the pitfall predicts."""
    swap = lambda v: v.flip(-3)  # noqa: E731
    failing = {g for g in ELEMENTS if _fails(g, lambda e, t: D4().act(e, t, TENSOR), swap)}
    assert failing == {"r", "r3", "s", "sr2"}


# ---------------------------------------------------------------------------- periods per axis
def test_per_axis_period_composes_modulo_the_periodic_axis_only():
    shifts = Shifts(line=("x", range(8)), period=(8, None))
    assert shifts.compose("x5y0", "x6y0") == "x3y0"
    field = torch.randn(1, 3, 8)  # non-square: 3 × 8
    assert torch.equal(shifts.act("x3y0", field, FieldType(["scalar"])), field.roll(3, -1))
    with pytest.raises(ValueError, match="period"):
        shifts.act("x3y0", torch.randn(1, 3, 9), FieldType(["scalar"]))
    rebuilt = from_spec(shifts.spec())
    assert rebuilt.periods == (8, None) and rebuilt.compose("x7y0", "x1y0") == "e"


def test_wall_mirror_is_a_flip_of_the_wall_axis():
    mirror = LatticeGroup("Mirror", {"e": Affine(), "sr2": Affine(((1, 0), (0, -1)), (0.0, 4.0))})
    field = torch.randn(2, 5, 7)
    out = mirror.act("sr2", field, VECTOR)
    assert torch.equal(out, torch.stack([field[0].flip(-2), -field[1].flip(-2)]))
    assert mirror.compose("sr2", "sr2") == "e"


def test_products_merge_per_axis_periods_and_refuse_conflicts():
    a = Shifts(line=("x", [1]), period=(8, None))
    b = Shifts(line=("y", [1]), period=(None, 4))
    assert Product(a, b).periods == (8, 4)
    with pytest.raises(ValueError, match="different periods along x"):
        Product(a, Shifts(line=("y", [2]), period=(6, None)))
    with pytest.raises(ValueError, match="period must be"):
        Shifts(line=("x", [1]), period=(0, None))


# ---------------------------------------------------------------------------- group averaging
def test_group_averaged_model_is_equivariant_on_tensor_fields(tol):
    torch.manual_seed(0)
    kind = FieldType(["vector", "tensor"])
    backbone = torch.nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular")
    model = GroupAveraged(backbone, D4(), kind)
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        for element in ELEMENTS:
            torch.testing.assert_close(
                model(D4().act(element, x, kind)),
                D4().act(element, model(x), kind),
                **tol["fp32"],
            )
        # the bare backbone is not equivariant: the check above can fail
        assert not torch.allclose(
            backbone(D4().act("r", x, kind)), D4().act("r", backbone(x), kind), atol=1e-3
        )
