import itertools
import math

import pytest
import torch

import symcoherence as sc
from symcoherence.groups import (
    C4,
    D4,
    FieldType,
    FourierShifts,
    LatticeGroup,
    Product,
    Shifts,
    from_spec,
)
from symcoherence.testing import TOLERANCES as TOL

MIXED = FieldType(["vector", "pseudoscalar", "scalar"])  # 4 channels: (u_x, u_y, omega, p)
# closed groups on an n×n periodic grid
CLOSED_GROUPS = {
    "C4": lambda n: C4(),
    "D4": lambda n: D4(),
    "Shifts-cyclic": lambda n: Shifts(line=("x", range(n)), period=n),
    "D4xShifts": lambda n: Product(
        D4(), Shifts([(dx, dy) for dx in range(n) for dy in range(n)], period=n)
    ),
}


def _field(n, batch=(2,), dtype=torch.float64):
    return torch.randn(*batch, MIXED.num_channels, n, n, dtype=dtype)


@pytest.mark.parametrize("name", ["C4", "D4", "Shifts-cyclic"])
def test_group_laws_exhaustively(name):
    group = CLOSED_GROUPS[name](5)
    e = group.identity
    assert e == group.elements[0]
    for a in group.elements:
        assert group.compose(e, a) == a == group.compose(a, e)
        assert group.compose(a, group.inverse(a)) == e == group.compose(group.inverse(a), a)
        for b in group.elements:
            assert group.compose(a, b) in group  # closure
            for c in group.elements:
                assert group.compose(group.compose(a, b), c) == group.compose(
                    a, group.compose(b, c)
                )


def test_group_laws_of_a_semidirect_product_on_sampled_triples():
    group = CLOSED_GROUPS["D4xShifts"](3)
    assert len(group) == 72
    rng = torch.Generator().manual_seed(1)
    triples = zip(*(group.sample(300, rng) for _ in range(3)), strict=True)
    for a, b, c in triples:
        assert group.compose(group.compose(a, b), c) == group.compose(a, group.compose(b, c))
        assert group.compose(a, group.inverse(a)) == "e"
    # rotations and translations do not commute: r ∘ t_x = t_y ∘ r
    assert group.compose("r", "x1y0") == "r|x1y0"
    assert group.compose("x0y1", "r") == "r|x1y0"
    assert group.compose("x2y0", "x2y0") == "x1y0"  # translations wrap modulo the period


@pytest.mark.parametrize("name", list(CLOSED_GROUPS))
@pytest.mark.parametrize("n", [6, 7])
def test_action_is_a_homomorphism_exactly(name, n):
    group = CLOSED_GROUPS[name](n)
    field = _field(n)
    pairs = itertools.product(group.elements, repeat=2)
    if len(group) > 8:
        rng = torch.Generator().manual_seed(2)
        pairs = zip(group.sample(60, rng), group.sample(60, rng), strict=True)
    for g, h in pairs:
        lhs = group.act(g, group.act(h, field, MIXED), MIXED)
        rhs = group.act(group.compose(g, h), field, MIXED)
        assert torch.equal(lhs, rhs), (g, h)
    assert torch.equal(group.act(group.identity, field, MIXED), field)


@pytest.mark.parametrize("name", list(CLOSED_GROUPS))
def test_actions_preserve_norm_and_orbit_shape(name):
    group = CLOSED_GROUPS[name](6)
    field = _field(6, batch=(3, 2))
    orbit = group.orbit(field, MIXED)
    assert orbit.shape == (len(group), *field.shape)
    assert torch.equal(orbit[0], field)
    norms = orbit.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, field.norm().expand(len(group)), **TOL["fp64"])


def test_d4_conventions_on_a_marked_grid():
    # a single marked point at (x, y) = (1, 0) cells: r moves it to (0, 1), s to (-1, 0)
    field = torch.zeros(1, 5, 5)
    field[0, 0, 1] = 1.0
    scalar = FieldType(["scalar"])
    assert D4().act("r", field, scalar)[0, 1, 0] == 1.0
    assert D4().act("s", field, scalar)[0, 0, 4] == 1.0
    # a uniform x-velocity turns into a uniform y-velocity under r and flips under s
    u = torch.zeros(2, 4, 4)
    u[0] = 1.0
    vector = FieldType(["vector"])
    assert torch.equal(D4().act("r", u, vector)[1], torch.ones(4, 4))
    assert torch.equal(D4().act("r", u, vector)[0], torch.zeros(4, 4))
    assert torch.equal(D4().act("s", u, vector)[0], -torch.ones(4, 4))


def _spectral_derivatives(field):
    """∂/∂x and ∂/∂y on the periodic unit square (x = last axis)."""
    n = field.shape[-1]
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64) * 2 * math.pi
    spectrum = torch.fft.fft2(field)
    d_dx = torch.fft.ifft2(spectrum * 1j * k[None, :]).real
    d_dy = torch.fft.ifft2(spectrum * 1j * k[:, None]).real
    return d_dx, d_dy


def _band_limited(channels, n, modes=3, seed=0):
    rng = torch.Generator().manual_seed(seed)
    spectrum = torch.zeros(channels, n, n, dtype=torch.complex128)
    block = torch.randn(
        channels, 2 * modes + 1, 2 * modes + 1, 2, generator=rng, dtype=torch.float64
    )
    index = torch.arange(-modes, modes + 1) % n
    spectrum[:, index[:, None], index[None, :]] = torch.view_as_complex(block)
    return torch.fft.ifft2(spectrum).real * n * n


def _curl_and_divergence(u):
    dux_dx, dux_dy = _spectral_derivatives(u[0])
    duy_dx, duy_dy = _spectral_derivatives(u[1])
    return duy_dx - dux_dy, dux_dx + duy_dy


@pytest.mark.parametrize("n", [16, 15])
@pytest.mark.parametrize("element", D4().elements)
def test_curl_of_transformed_velocity_is_transformed_vorticity(n, element):
    group = D4()
    u = _band_limited(2, n)
    omega, divergence = _curl_and_divergence(u)
    moved_omega, moved_div = _curl_and_divergence(group.act(element, u, FieldType(["vector"])))
    expected_omega = group.act(element, omega[None], FieldType(["pseudoscalar"]))[0]
    expected_div = group.act(element, divergence[None], FieldType(["scalar"]))[0]
    torch.testing.assert_close(moved_omega, expected_omega, rtol=0, atol=1e-9)
    torch.testing.assert_close(moved_div, expected_div, rtol=0, atol=1e-9)


def test_swapped_velocity_components_fail_the_curl_check():
    """Negative control: treating (u_x, u_y) as (u_y, u_x) breaks exactly {r, r3, s, sr2}."""
    group = D4()
    u = _band_limited(2, 16)
    omega, _ = _curl_and_divergence(u)
    broken = []
    for element in group.elements:
        wrong = group.act(element, u.flip(0), FieldType(["vector"])).flip(0)  # swapped components
        moved_omega, _ = _curl_and_divergence(wrong)
        expected = group.act(element, omega[None], FieldType(["pseudoscalar"]))[0]
        if not torch.allclose(moved_omega, expected, atol=1e-6):
            broken.append(element)
    assert broken == ["r", "r3", "s", "sr2"]


def test_treating_vorticity_as_a_scalar_fails_under_reflections():
    group = D4()
    u = _band_limited(2, 16)
    omega, _ = _curl_and_divergence(u)
    for element in group.elements:
        moved_omega, _ = _curl_and_divergence(group.act(element, u, FieldType(["vector"])))
        as_scalar = group.act(element, omega[None], FieldType(["scalar"]))[0]
        reflects = element.startswith("s")
        assert torch.allclose(moved_omega, as_scalar, atol=1e-6) != reflects


@pytest.mark.parametrize("n", [12, 13])
def test_integer_fourier_shifts_equal_rolls(n):
    field = _field(n)
    offsets = [(1, 0), (0, -2), (3, 5)]
    fourier, rolls = FourierShifts(offsets), Shifts(offsets)
    assert fourier.elements == rolls.elements
    for element in rolls.elements:
        assert rolls.is_exact(element) and fourier.is_exact(element)
        torch.testing.assert_close(
            fourier.act(element, field, MIXED), rolls.act(element, field, MIXED), **TOL["fp64"]
        )


def test_subpixel_shifts_compose_on_band_limited_fields():
    field = _band_limited(MIXED.num_channels, 16)
    group = FourierShifts([(0.3, -0.2), (0.45, 0.7), (0.75, 0.5)])
    assert not group.is_exact("x0.3y-0.2")
    twice = group.act("x0.3y-0.2", group.act("x0.45y0.7", field, MIXED), MIXED)
    assert group.compose("x0.3y-0.2", "x0.45y0.7") == "x0.75y0.5"
    torch.testing.assert_close(twice, group.act("x0.75y0.5", field, MIXED), **TOL["fp64"])
    # a half-cell shift of a band-limited field moves it to the analytic half-way values
    x = torch.arange(16, dtype=torch.float64) / 16
    wave = torch.sin(2 * math.pi * 2 * x).expand(16, 16)[None]
    moved = FourierShifts([(0.5, 0)]).act("x0.5y0", wave, FieldType(["scalar"]))
    expected = torch.sin(2 * math.pi * 2 * (x - 0.5 / 16)).expand(16, 16)[None]
    torch.testing.assert_close(moved, expected, **TOL["fp64"])


def test_actions_work_under_vmap_and_autograd():
    group = D4()
    field = _field(6, batch=(4,)).requires_grad_()
    batched = torch.func.vmap(lambda f: group.act("sr", f, MIXED))(field)
    assert torch.equal(batched, group.act("sr", field, MIXED))
    (grad,) = torch.autograd.grad(batched.pow(2).sum(), field)
    torch.testing.assert_close(grad, 2 * field, **TOL["exact"])


def test_sampling_uses_only_the_callers_generator():
    group = D4()
    state = torch.get_rng_state()
    first = group.sample(20, torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())
    assert first == group.sample(20, torch.Generator().manual_seed(3))
    assert set(first) <= set(group.elements)
    with pytest.raises(TypeError, match="torch.Generator"):
        group.sample(3, 0)


def test_subgroups_and_closure_errors():
    rotations_half = D4().subgroup(["r2", "s", "sr2"], name="D2")
    assert rotations_half.elements == ("e", "r2", "s", "sr2")
    assert rotations_half.compose("s", "sr2") == "r2"
    with pytest.raises(ValueError, match="not closed"):
        D4().subgroup(["r"]).compose("r", "r")
    with pytest.raises(ValueError, match="not closed"):
        Shifts(box=1).compose("x1y0", "x1y0")  # no period: (2, 0) is outside the box


@pytest.mark.parametrize("name", list(CLOSED_GROUPS))
def test_spec_round_trip(name):
    group = CLOSED_GROUPS[name](6)
    rebuilt = from_spec(group.spec())
    assert rebuilt.name == group.name and rebuilt.elements == group.elements
    field = _field(6)
    for element in group.elements[:10]:
        assert torch.equal(rebuilt.act(element, field, MIXED), group.act(element, field, MIXED))
    sub = from_spec(D4().subgroup(["s"], name="mirror").spec())
    assert sub.name == "mirror" and sub.elements == ("e", "s")


def test_bad_input_messages():
    group = D4()
    with pytest.raises(ValueError, match=r"unknown element 'q'.*valid elements are \['e', 'r'"):
        group.act("q", torch.zeros(1, 4, 4), FieldType(["scalar"]))
    with pytest.raises(ValueError, match=r"needs a square grid; got H×W = 4×6"):
        group.act("r", torch.zeros(1, 4, 6), FieldType(["scalar"]))
    # axis-preserving elements are fine on rectangles
    group.act("r2", torch.zeros(1, 4, 6), FieldType(["scalar"]))
    with pytest.raises(ValueError, match="has 2 channels but field has 3"):
        group.act("r", torch.zeros(3, 4, 4), FieldType(["vector"]))
    with pytest.raises(ValueError, match=r"period of 5 cells.*grid is 4×4"):
        Shifts(box=1, period=5).act("x1y0", torch.zeros(1, 4, 4), FieldType(["scalar"]))
    with pytest.raises(ValueError, match="exactly one of"):
        Shifts([(1, 0)], box=1)
    with pytest.raises(ValueError, match="use FourierShifts"):
        Shifts([(0.5, 0)])
    with pytest.raises(ValueError, match="at least one element"):
        group.orbit(torch.zeros(1, 4, 4), FieldType(["scalar"]), elements=[])
    with pytest.raises(ValueError, match="must be the identity"):
        LatticeGroup("bad", {"r": D4().table["r"]})
    with pytest.raises(ValueError, match="unknown group spec type"):
        from_spec({"type": "Nope"})


@pytest.mark.parametrize(
    "make_group",
    [
        lambda: sc.groups.D4(),
        lambda: sc.groups.C4(),
        lambda: sc.groups.Shifts(box=1, period=8),
        lambda: sc.groups.FourierShifts(line=("x", [0.5, 1.5])),
        lambda: sc.groups.Product(sc.groups.D4(), sc.groups.Shifts(box=1, period=8)),
        lambda: sc.groups.ZonalShifts(8, stride=4),
        lambda: sc.groups.EquatorialReflection(),
        lambda: sc.groups.SphereProduct(sc.groups.EquatorialReflection(), sc.groups.ZonalShifts(8)),
        lambda: sc.groups.D4().subgroup(["e", "r2"], "C2"),
    ],
)
def test_spec_round_trips_to_the_same_class_through_json(make_group):
    import json

    group = make_group()
    rebuilt = sc.groups.from_spec(json.loads(json.dumps(group.spec())))
    assert type(rebuilt) is type(group)
    assert rebuilt.name == group.name and rebuilt.elements == group.elements
    field = torch.randn(2, 8, 8, dtype=torch.float64)
    kind = sc.FieldType(["scalar", "pseudoscalar"])
    for element in group.elements:
        assert torch.equal(rebuilt.act(element, field, kind), group.act(element, field, kind))
