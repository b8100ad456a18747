"""Sphere symmetry groups: naming, group laws (exact), actions on field types, specs and errors."""

import itertools

import pytest
import torch

from symcoherence.groups import (
    D4,
    EquatorialReflection,
    FieldType,
    SphereElement,
    SphereGroup,
    SphereProduct,
    ZonalShifts,
    from_spec,
)

UVH = FieldType(["vector", "scalar"])
VDH = FieldType(["pseudoscalar", "scalar", "scalar"])


def product(nlon=6, **kwargs):
    return SphereProduct(ZonalShifts(nlon, **kwargs), EquatorialReflection())


def test_names_and_elements():
    assert ZonalShifts(4).name == "Zonal"
    assert ZonalShifts(4).elements == ("e", "z1", "z2", "z3")
    assert ZonalShifts(12, stride=4).elements == ("e", "z4", "z8")
    assert ZonalShifts(8, shifts=[3, -1, 11]).elements == ("e", "z3", "z7")
    assert EquatorialReflection().elements == ("e", "s")
    assert EquatorialReflection().name == "Equator"
    group = product(4)
    assert group.name == "ZonalxEquator"
    assert group.elements == ("e", "z1", "z2", "z3", "s", "sz1", "sz2", "sz3")
    # The factor order does not change the name or the elements (the factors commute).
    swapped = SphereProduct(EquatorialReflection(), ZonalShifts(4))
    assert swapped.name == group.name and swapped.elements == group.elements


@pytest.mark.parametrize("group", [product(6), product(5), ZonalShifts(8, stride=2)], ids=repr)
def test_group_laws_hold_exactly(group, tol):
    field = torch.randn(2, 3, 5, group.period)
    for a, b in itertools.product(group.elements, repeat=2):
        lhs = group.act(a, group.act(b, field, UVH), UVH)
        rhs = group.act(group.compose(a, b), field, UVH)
        torch.testing.assert_close(lhs, rhs, **tol["exact"])
    for a in group.elements:
        back = group.act(group.inverse(a), group.act(a, field, VDH), VDH)
        torch.testing.assert_close(back, field, **tol["exact"])
        assert group.is_exact(a)
    assert group.identity == "e"
    torch.testing.assert_close(group.act("e", field, UVH), field, **tol["exact"])


def test_actions_on_each_field_kind(tol):
    field = torch.randn(3, 4, 8)
    shifted = ZonalShifts(8).act("z3", field, UVH)
    torch.testing.assert_close(shifted, torch.roll(field, 3, dims=-1), **tol["exact"])
    mirrored = EquatorialReflection().act("s", field, UVH)  # (u, v, h) -> (u, -v, h) flipped
    expected = torch.stack([field[0], -field[1], field[2]]).flip(-2)
    torch.testing.assert_close(mirrored, expected, **tol["exact"])
    mirrored = EquatorialReflection().act("s", field, VDH)  # (zeta, delta, h) -> (-zeta, ...)
    expected = torch.stack([-field[0], field[1], field[2]]).flip(-2)
    torch.testing.assert_close(mirrored, expected, **tol["exact"])
    both = product(8).act("sz3", field, VDH)
    torch.testing.assert_close(both, torch.roll(mirrored, 3, dims=-1), **tol["exact"])


def test_shift_moves_features_east_and_mirror_moves_them_south():
    field = torch.zeros(1, 5, 8)
    field[0, 1, 2] = 1.0  # a spot north of the equator at longitude index 2
    east = ZonalShifts(8).act("z3", field, FieldType(["scalar"]))
    assert east[0, 1, 5] == 1.0
    south = EquatorialReflection().act("s", field, FieldType(["scalar"]))
    assert south[0, 3, 2] == 1.0


def test_orbit_and_vmap(tol):
    group = product(4)
    field = torch.randn(6, 3, 5, 4)
    orbit = group.orbit(field, UVH)
    assert orbit.shape == (8, 6, 3, 5, 4)
    batched = torch.func.vmap(lambda f: group.act("sz1", f, UVH))(field)
    torch.testing.assert_close(batched, orbit[group.elements.index("sz1")], **tol["exact"])


@pytest.mark.parametrize(
    "group",
    [product(6), ZonalShifts(6, stride=3), EquatorialReflection(), product(6).subgroup(["s"])],
    ids=repr,
)
def test_spec_round_trip(group):
    rebuilt = from_spec(group.spec())
    assert rebuilt.name == group.name
    assert rebuilt.elements == group.elements
    field = torch.randn(3, 4, 6)
    for a in group.elements:
        assert torch.equal(rebuilt.act(a, field, UVH), group.act(a, field, UVH))
        for b in group.elements:
            assert rebuilt.compose(a, b) == group.compose(a, b)


def test_not_closed_subset_raises():
    group = ZonalShifts(8, shifts=[1])
    with pytest.raises(ValueError, match="not closed"):
        group.compose("z1", "z1")
    with pytest.raises(ValueError, match="not closed"):
        group.inverse("z1")


def test_clear_errors():
    with pytest.raises(ValueError, match="positive divisor of nlon = 8"):
        ZonalShifts(8, stride=3)
    with pytest.raises(ValueError, match="at most one"):
        ZonalShifts(8, shifts=[1], stride=2)
    with pytest.raises(ValueError, match="nlon must be a positive integer"):
        ZonalShifts(0)
    with pytest.raises(ValueError, match="no period"):
        SphereGroup("bad", [SphereElement(1)])
    with pytest.raises(ValueError, match="different periods"):
        SphereProduct(ZonalShifts(8), ZonalShifts(6))
    with pytest.raises(TypeError, match="sphere groups"):
        SphereProduct(ZonalShifts(8), D4())
    with pytest.raises(ValueError, match="nlon = 6"):
        ZonalShifts(8).act("z1", torch.randn(3, 4, 6), UVH)
    with pytest.raises(ValueError, match="3 channels but field has 2"):
        ZonalShifts(8).act("z1", torch.randn(2, 4, 8), UVH)
    with pytest.raises(ValueError, match="unknown element 'r'"):
        product(8).act("r", torch.randn(3, 4, 8), UVH)
