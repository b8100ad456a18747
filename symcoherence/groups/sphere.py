r"""Symmetries of fields on a latitude–longitude grid of the sphere: zonal shifts and the mirror.

Grid and layout: a field on the sphere has layout ``(..., C, nlat, nlon)``. As in torch-harmonics,
latitude index ``0`` is the **north pole** side (latitude decreases, colatitude increases along axis
−2) and longitude ``λ_k = 2π k / nlon`` increases **eastward** along the last axis (−1).

Field types reuse :class:`~symcoherence.groups.FieldType` with the sphere's local frame:

* ``"vector"`` is ``(u, v)`` = (eastward, northward) components, in that channel order. ``u``
  points along increasing longitude (the last axis, like planar ``x``); ``v`` points **north**,
  i.e. towards *decreasing* latitude index. Both group actions below have diagonal matrices in this
  frame, so the orientation of ``v`` relative to the index does not change how they act.
* ``"pseudoscalar"``: relative vorticity ``ζ = k̂·∇×u`` (and absolute or potential vorticity).
* ``"scalar"``: height, geopotential, divergence.

Elements are isometries of the sphere that map the grid to itself,
``g = (k, σ)``: ``λ ↦ λ + 2πk/nlon`` (a rotation about the polar axis by ``k`` cells) combined with
``φ ↦ σφ`` (``σ = −1`` is the mirror across the equatorial plane). They act on fields as
``(g·f)(λ, φ) = ρ(g) f(g⁻¹(λ, φ))``:

* zonal shift by ``k`` cells: ``torch.roll(f, k, dims=-1)``, ``ρ = 1`` on every channel (the local
  east/north frame is carried along by the rotation);
* equatorial mirror: ``torch.flip(f, dims=(-2,))``, ``ρ = diag(1, −1)`` on ``(u, v)``, ``−1`` on
  pseudoscalars. This is exact on grids whose latitudes are symmetric about the equator:
  torch-harmonics' equiangular (Clenshaw–Curtis, poles included), Legendre–Gauss and Lobatto grids.

Rotating shallow water is symmetric under the mirror with exactly these rules: the Coriolis
parameter ``f = 2Ω sin φ`` changes sign, and so does ``k̂ × u`` of the mirrored velocity, so the
Coriolis force ``f k̂ × u`` transforms like the other forces (a true vector); relative and absolute
vorticity change sign, height and divergence do not. The planetary rotation vector itself is an
axial vector along the mirror's normal and is unchanged by the mirror, which is why no
"rotate the other way" is needed. ``tests/test_sphere_groups.py`` proves this against the solver.

The two kinds of elements commute, so every element is ``s^σ ∘ z^k`` and
``(k₁, σ₁) ∘ (k₂, σ₂) = (k₁ + k₂ mod nlon, σ₁σ₂)``. Element names: ``"e"``, ``"z{k}"`` (shift by
``k`` cells east, ``0 < k < nlon``), ``"s"`` (mirror) and ``"sz{k}"`` (shift, then mirror).

Example:
    >>> import torch
    >>> from symcoherence.groups import EquatorialReflection, FieldType, SphereProduct, ZonalShifts
    >>> group = SphereProduct(ZonalShifts(8, stride=4), EquatorialReflection())
    >>> group.name, group.elements
    ('ZonalxEquator', ('e', 'z4', 's', 'sz4'))
    >>> uvh = torch.randn(3, 5, 8)                      # (u, v, h) on a 5 x 8 grid
    >>> out = group.act("s", uvh, FieldType(["vector", "scalar"]))
    >>> torch.equal(out[1], -uvh[1].flip(-2))          # northward wind changes sign
    True
    >>> group.compose("sz4", "sz4")
    'e'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from symcoherence.groups.base import TransformGroup
from symcoherence.groups.field_types import FieldType
from symcoherence.groups.registry import register_group_class, register_group_type

_MIRROR = ((1, 0), (0, -1))  # (u east, v north) -> (u, -v)


@dataclass(frozen=True)
class SphereElement:
    """An isometry ``(λ, φ) ↦ (λ + 2π shift / nlon, ±φ)`` of the sphere that maps the grid to itself.

    Attributes:
        shift: zonal shift in longitude cells (eastward), reduced modulo the period when known.
        reflect: whether the equatorial mirror ``φ ↦ −φ`` is applied.
    """

    shift: int = 0
    reflect: bool = False

    def __matmul__(self, other: SphereElement) -> SphereElement:
        return SphereElement(self.shift + other.shift, self.reflect != other.reflect)

    def inverse(self) -> SphereElement:
        """``(k, σ)⁻¹ = (−k, σ)``."""
        return SphereElement(-self.shift, self.reflect)


def _element_name(element: SphereElement) -> str:
    prefix = "s" if element.reflect else ""
    if element.shift == 0:
        return prefix or "e"
    return f"{prefix}z{element.shift}"


class SphereGroup(TransformGroup):
    """A named, finite set of grid-preserving sphere isometries acting on ``(..., C, nlat, nlon)``.

    :class:`ZonalShifts`, :class:`EquatorialReflection` and :class:`SphereProduct` are instances
    with particular element tables; build one directly only for an unusual subset.

    Args:
        name: short name used in logged keys.
        elements: the :class:`SphereElement` s; the identity is put first, duplicates dropped.
        period: longitude grid size ``nlon``. Shifts are reduced modulo it, and fields must have
            ``nlon = period`` columns. ``None`` only for groups without shifts.

    Raises:
        ValueError: for a non-positive period, or shifts without a period.
    """

    def __init__(self, name: str, elements: Iterable[SphereElement], period: int | None = None):
        if period is not None and (not isinstance(period, int) or period < 1):
            raise ValueError(
                f"period must be the number of longitudes nlon (a positive integer), got {period!r}"
            )
        reduced = [self._reduce_with(e, period) for e in elements]
        if period is None and any(e.shift != 0 for e in reduced):
            raise ValueError(
                f"group {name} has zonal shifts but no period; pass period=nlon (the number of "
                "longitudes of the grid) so that shifts wrap around the sphere"
            )
        table = {"e": SphereElement()}
        for element in reduced:
            table.setdefault(_element_name(element), element)
        self.name = name
        self.period = period
        self.table = table
        self.elements = tuple(table)

    @staticmethod
    def _reduce_with(element: SphereElement, period: int | None) -> SphereElement:
        if period is None:
            return element
        return SphereElement(element.shift % period, element.reflect)

    # ------------------------------------------------------------------ actions
    def act(self, element: str, field: torch.Tensor, field_type: FieldType) -> torch.Tensor:
        """``(g·f)(λ, φ) = ρ(g) f(g⁻¹(λ, φ))`` on ``field`` of layout ``(..., C, nlat, nlon)``.

        A shift by ``k`` cells is ``roll(f, k, dims=-1)``; the mirror is ``flip(f, dims=(-2,))``
        times ``−1`` on pseudoscalars and on the northward component ``v`` of vectors.

        Raises:
            ValueError: for an unknown element, a channel count that does not match
                ``field_type``, or ``nlon`` different from the group's period.
        """
        self.check_element(element)
        field_type.check(field)
        nlon = field.shape[-1]
        if self.period is not None and nlon != self.period:
            raise ValueError(
                f"{self.name} shifts longitudes modulo {self.period} cells but the field has "
                f"nlon = {nlon} (shape {tuple(field.shape)}); build the group with nlon={nlon}"
            )
        g = self.table[element]
        out = field
        if g.reflect:
            out = torch.flip(out, dims=(-2,))
            _, sign = field_type.channel_action(_MIRROR)
            if any(v < 0 for v in sign):
                out = out * torch.tensor(sign, dtype=out.dtype, device=out.device)[:, None, None]
        if g.shift:
            out = torch.roll(out, shifts=g.shift, dims=-1)
        return out

    # ------------------------------------------------------------------ structure
    def _lookup(self, element: SphereElement, what: str) -> str:
        name = _element_name(self._reduce_with(element, self.period))
        if name not in self.table:
            raise ValueError(
                f"{self.name} is not closed: {what} is {name!r}, which is not one of its elements "
                f"{list(self.elements)}"
            )
        return name

    def is_exact(self, a: str) -> bool:
        """Always ``True``: integer rolls and the latitude flip are permutations with signs."""
        self.check_element(a)
        return True

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments for the named groups, else the element table as plain data."""
        named = self._constructor_spec()
        if named is not None:
            return named
        return {
            "type": "SphereGroup",
            "name": self.name,
            "period": self.period,
            "elements": [{"shift": g.shift, "reflect": g.reflect} for g in self.table.values()],
        }


class ZonalShifts(SphereGroup):
    """Rotations about the polar axis by whole longitude cells: ``roll`` along the last axis.

    The elements are ``"e"`` and ``"z{k}"`` (``k`` cells east). Exact on any longitude grid.

    Args:
        nlon: number of longitudes (the period of the shifts).
        shifts: explicit shifts in cells (reduced modulo ``nlon``; the identity is added).
        stride: every ``stride``-th shift, ``0, stride, 2 stride, …``; ``stride`` must divide
            ``nlon``, and the set is then the cyclic group of order ``nlon / stride``.
            Give at most one of ``shifts`` and ``stride``; neither means all ``nlon`` shifts.

    Raises:
        ValueError: for a bad ``nlon``, both options, or a stride that does not divide ``nlon``.

    Example:
        >>> ZonalShifts(16, stride=4).elements
        ('e', 'z4', 'z8', 'z12')
    """

    def __init__(
        self,
        nlon: int,
        shifts: list[int] | None = None,
        stride: int | None = None,
    ):
        if not isinstance(nlon, int) or nlon < 1:
            raise ValueError(f"nlon must be a positive integer, got {nlon!r}")
        if shifts is not None and stride is not None:
            raise ValueError("give at most one of shifts=[k, ...] and stride=d, not both")
        if stride is not None:
            if not isinstance(stride, int) or stride < 1 or nlon % stride:
                raise ValueError(
                    f"stride must be a positive divisor of nlon = {nlon}, got {stride!r}; "
                    f"divisors are {[d for d in range(1, nlon + 1) if nlon % d == 0]}"
                )
            values = list(range(0, nlon, stride))
        elif shifts is not None:
            values = [int(k) for k in shifts]
        else:
            values = list(range(nlon))
        super().__init__("Zonal", [SphereElement(k) for k in values], period=nlon)
        self._record_arguments(nlon=nlon, shifts=values)


class EquatorialReflection(SphereGroup):
    """The mirror ``φ ↦ −φ`` across the equatorial plane: elements ``"e"`` and ``"s"``.

    Acts as a flip of the latitude axis with the sign rules of the module docstring; exact on
    latitude grids symmetric about the equator (all of torch-harmonics' grids).

    Example:
        >>> import torch
        >>> vorticity = torch.arange(3.0).reshape(1, 3, 1)
        >>> EquatorialReflection().act("s", vorticity, FieldType(["pseudoscalar"])).flatten()
        tensor([-2., -1., -0.])
    """

    def __init__(self):
        super().__init__("Equator", [SphereElement(0, True)], period=None)
        self._record_arguments()


class SphereProduct(SphereGroup):
    """All products ``a ∘ b`` of an element of ``first`` and one of ``second``.

    Args:
        first: a sphere group (e.g. :class:`EquatorialReflection`).
        second: a sphere group (e.g. :class:`ZonalShifts`).
        name: short name for logged keys (default ``"{first.name}x{second.name}"`` with the
            shifts named first, e.g. ``"ZonalxEquator"``).

    Raises:
        TypeError: if a factor is not a :class:`SphereGroup`.
        ValueError: if the factors have different periods.
    """

    def __init__(self, first: SphereGroup, second: SphereGroup, name: str | None = None):
        for factor in (first, second):
            if not isinstance(factor, SphereGroup):
                raise TypeError(
                    "SphereProduct combines sphere groups (ZonalShifts, EquatorialReflection); "
                    f"got {type(factor).__name__}"
                )
        periods = {p for p in (first.period, second.period) if p is not None}
        if len(periods) > 1:
            raise ValueError(
                f"the factors have different periods {sorted(periods)}; build both for one nlon"
            )
        if name is None:
            ordered = sorted((first, second), key=lambda g: g.period is None)
            name = "x".join(g.name for g in ordered)
        products = [a @ b for b in second.table.values() for a in first.table.values()]
        products.sort(key=lambda g: (g.reflect, g.shift % (max(periods) if periods else 1)))
        super().__init__(name, products, period=periods.pop() if periods else None)
        self.factors = (first, second)
        self._record_arguments(first=first, second=second, name=name)


def _from_spec(spec: dict[str, Any]) -> SphereGroup:
    elements = [SphereElement(int(e["shift"]), bool(e["reflect"])) for e in spec["elements"]]
    return SphereGroup(spec["name"], elements, period=spec.get("period"))


register_group_type("SphereGroup", _from_spec)
for _named in (ZonalShifts, EquatorialReflection, SphereProduct):
    register_group_class(_named)
