r"""Symmetries of the periodic square grid: rotations, reflections and translations.

Every element is an affine map of the plane, ``g: x ↦ M x + t``, with ``M`` a 2×2 signed
permutation (an element of D4) and ``t`` a translation in **grid cells**. It acts on a field as

.. math:: (g·f)(x) = ρ(M)\, f(M^{-1}(x - t)),

with ``ρ`` given by the :class:`~symcoherence.groups.FieldType` (scalars unchanged, pseudoscalars
times ``det M``, vectors multiplied by ``M``). Coordinates: ``x`` is the last array axis, ``y`` the
second-to-last, grid point ``(i, j)`` sits at ``(x, y) = (i, j)`` cells and rotations turn about grid
point ``(0, 0)``, so on a periodic grid of any size (even or odd) every ``M`` is an exact permutation.

D4 conventions:

* ``r`` is the counter-clockwise quarter turn ``(x, y) ↦ (−y, x)``;
* ``s`` is the reflection ``x ↦ −x`` (mirror across the ``y`` axis);
* ``"sr2"`` means ``s ∘ r²``: apply ``r²`` first, then ``s``; elements are
  ``e, r, r2, r3, s, sr, sr2, sr3``.

Composition of affine maps, ``(M₁, t₁) ∘ (M₂, t₂) = (M₁M₂, M₁t₂ + t₁)``, is how :meth:`compose`
works; translations are reduced modulo ``period`` cells when a period is given. ``period`` is one
number for a square periodic grid or a pair ``(p_x, p_y)`` for a rectangular one, with ``None`` for an
axis that is not periodic (a channel periodic in ``x`` between walls in ``y`` is ``(n_x, None)``).
A mirror between walls, ``y ↦ (n_y − 1) − y``, is the affine map ``(diag(1, −1), (0, n_y − 1))``: its
translation is not reduced on the non-periodic axis, and the grid part is then a plain flip.

Example:
    >>> import torch
    >>> from symcoherence.groups import D4, FieldType
    >>> u = torch.randn(2, 16, 16)                       # one velocity field (u_x, u_y)
    >>> v = D4().act("r", u, FieldType(["vector"]))
    >>> D4().compose("r", "r")
    'r2'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from symcoherence.groups.affine import (
    IDENTITY,
    REFLECTION,
    ROTATION,
    Affine,
    axis_periods,
    fourier_shift,
    matmul,
    move_grid,
    plain_period,
)
from symcoherence.groups.base import TransformGroup
from symcoherence.groups.field_types import FieldType

_TOLERANCE = 1e-9  # for comparing (float) translations of Fourier shifts


class LatticeGroup(TransformGroup):
    """A named, finite set of affine lattice maps acting on fields on a periodic grid.

    The concrete groups (:class:`C4`, :class:`D4`, :class:`Shifts`, :class:`FourierShifts`,
    :class:`Product`) are instances of this class with particular element tables.

    Args:
        name: short name used in logged keys.
        table: element name -> :class:`Affine`; the first entry must be the identity.
        period: if given, translations are taken modulo ``period`` cells in ``compose``: one number
            (square grid, both axes) or a pair ``(p_x, p_y)`` with ``None`` for a non-periodic axis.
            The action then requires a grid of exactly that size along every periodic axis.
        subpixel: translate with Fourier phase ramps (exact only for band-limited fields)
            instead of integer rolls.
    """

    def __init__(
        self,
        name: str,
        table: dict[str, Affine],
        period: int | Sequence[int | None] | None = None,
        subpixel: bool = False,
    ):
        if not table:
            raise ValueError(f"group {name} needs at least the identity element")
        first_name, first = next(iter(table.items()))
        if first != Affine():
            raise ValueError(f"the first element of {name} must be the identity, got {first_name}")
        self.name = name
        self.table = dict(table)
        self.elements = tuple(table)
        self.periods = axis_periods(period)
        self.period = period if period is None or isinstance(period, int) else self.periods
        self.subpixel = subpixel

    # ------------------------------------------------------------------ actions
    def act(self, element: str, field: torch.Tensor, field_type: FieldType) -> torch.Tensor:
        """``(g·f)(x) = ρ(M) f(M⁻¹(x − t))`` on ``field`` of layout ``(..., C, H, W)``."""
        self.check_element(element)
        field_type.check(field)
        affine = self.table[element]
        height, width = field.shape[-2:]
        period_x, period_y = self.periods
        if (period_x is not None and width != period_x) or (
            period_y is not None and height != period_y
        ):
            hint = width if height == width else (width, height)
            raise ValueError(
                f"{self.name} composes translations with a period of {self.period} cells but the "
                f"grid is {height}×{width} (shape {tuple(field.shape)}); build the group with "
                f"period={hint} for this grid"
            )
        if affine.swaps_axes and height != width:
            raise ValueError(
                f"element {element!r} of {self.name} exchanges the x and y axes and needs a square "
                f"grid; got H×W = {height}×{width} (shape {tuple(field.shape)}). Use a group "
                "without quarter turns (e.g. D4().subgroup(['e', 'r2', 's', 'sr2'])) or square data"
            )
        out = move_grid(field, affine.matrix)
        source, sign = field_type.channel_action(affine.matrix)
        if source != list(range(len(source))):
            out = out.index_select(-3, torch.tensor(source, device=field.device))
        if any(s < 0 for s in sign):
            out = out * torch.tensor(sign, dtype=out.dtype, device=out.device)[:, None, None]
        return self._translate(out, affine.shift)

    def _translate(self, field: torch.Tensor, shift: tuple[float, float]) -> torch.Tensor:
        if shift[0] == 0 and shift[1] == 0:
            return field
        if self.subpixel:
            return fourier_shift(field, shift)
        return torch.roll(field, shifts=(int(shift[1]), int(shift[0])), dims=(-2, -1))

    # ------------------------------------------------------------------ structure
    def _reduce(self, affine: Affine) -> Affine:
        if self.periods == (None, None):
            return affine
        shift = []
        for s, p in zip(affine.shift, self.periods, strict=True):
            if p is not None:
                s = ((s % p) + p) % p
                s = 0.0 if abs(s - p) < _TOLERANCE else s
            shift.append(s)
        return Affine(affine.matrix, tuple(shift))  # type: ignore[arg-type]

    def _lookup(self, affine: Affine, what: str) -> str:
        target = self._reduce(affine)
        for name, candidate in self.table.items():
            candidate = self._reduce(candidate)
            if candidate.matrix == target.matrix and all(
                abs(x - y) < _TOLERANCE for x, y in zip(candidate.shift, target.shift, strict=True)
            ):
                return name
        raise ValueError(
            f"{self.name} is not closed: {what} is the map x -> {affine.matrix} x + {affine.shift}, "
            f"which is not one of its elements {list(self.elements)}"
            + ("" if self.period is not None else "; give period=<grid size> to wrap translations")
        )

    def is_exact(self, a: str) -> bool:
        """Rotations, reflections and integer translations are exact; sub-pixel shifts are not."""
        self.check_element(a)
        return all(float(s).is_integer() for s in self.table[a].shift)

    def spec(self) -> dict[str, Any]:
        """The constructor's arguments for the named groups, else the element table as plain data."""
        named = self._constructor_spec()
        if named is not None:
            return named
        return {
            "type": "LatticeGroup",
            "name": self.name,
            "table": {
                name: {"matrix": [list(r) for r in aff.matrix], "shift": list(aff.shift)}
                for name, aff in self.table.items()
            },
            "period": self.period if not isinstance(self.period, tuple) else list(self.period),
            "subpixel": self.subpixel,
        }


def _d4_table(rotations_only: bool) -> dict[str, Affine]:
    table: dict[str, Affine] = {}
    power = IDENTITY
    rotations = []
    for _ in range(4):
        rotations.append(power)
        power = matmul(ROTATION, power)
    for k, m in enumerate(rotations):
        table["e" if k == 0 else ("r" if k == 1 else f"r{k}")] = Affine(m)
    if not rotations_only:
        for k, m in enumerate(rotations):
            table["s" if k == 0 else ("sr" if k == 1 else f"sr{k}")] = Affine(matmul(REFLECTION, m))
    return table


class C4(LatticeGroup):
    """Quarter turns about grid point (0, 0): elements ``e, r, r2, r3`` (``r`` counter-clockwise).

    Exact permutations on square periodic grids of any size.
    """

    def __init__(self):
        super().__init__("C4", _d4_table(rotations_only=True))
        self._record_arguments()


class D4(LatticeGroup):
    """The symmetry group of the square: ``e, r, r2, r3, s, sr, sr2, sr3``.

    ``r`` is the counter-clockwise quarter turn ``(x, y) ↦ (−y, x)``, ``s`` the mirror ``x ↦ −x``,
    and ``"srk"`` is ``s ∘ rᵏ`` (``rᵏ`` first). Exact permutations on square periodic grids.
    Vorticity (a pseudoscalar) changes sign under ``s, sr, sr2, sr3``.
    """

    def __init__(self):
        super().__init__("D4", _d4_table(rotations_only=False))
        self._record_arguments()


def _shift_name(shift: tuple[float, float]) -> str:
    def fmt(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    return f"x{fmt(shift[0])}y{fmt(shift[1])}"


def _shift_list(
    shifts: Iterable[Sequence[float]] | None,
    box: int | None,
    line: tuple[str, Sequence[float]] | None,
    integer: bool,
) -> list[tuple[float, float]]:
    given = sum(option is not None for option in (shifts, box, line))
    if given != 1:
        raise ValueError(
            "give exactly one of shifts=[(dx, dy), ...], box=a (all shifts in [-a, a]²) or "
            f"line=('x' | 'y', [d, ...]); got {given}"
        )
    if box is not None:
        if not isinstance(box, int) or box < 0:
            raise ValueError(f"box must be a non-negative integer number of cells, got {box!r}")
        values = [(dx, dy) for dy in range(-box, box + 1) for dx in range(-box, box + 1)]
    elif line is not None:
        axis, distances = line
        if axis not in ("x", "y"):
            raise ValueError(f"line axis must be 'x' or 'y', got {axis!r}")
        values = [(d, 0) if axis == "x" else (0, d) for d in distances]
    else:
        values = [tuple(s) for s in shifts]  # type: ignore[misc]
        if any(len(s) != 2 for s in values):
            raise ValueError(f"each shift must be a pair (dx, dy) in cells, got {values}")
    if integer and any(not float(v).is_integer() for s in values for v in s):
        raise ValueError(
            f"Shifts takes integer cell offsets, got {values}; use FourierShifts for sub-pixel shifts"
        )
    out = [(0.0, 0.0)] + [(float(dx), float(dy)) for dx, dy in values if (dx, dy) != (0, 0)]
    return list(dict.fromkeys(out))


class Shifts(LatticeGroup):
    """Integer periodic translations (``torch.roll``), exact on any periodic grid.

    Element names are ``"x{dx}y{dy}"`` (cells along x = last axis, y = second-to-last); the identity
    is ``"e"``. Give exactly one of:

    Args:
        shifts: explicit ``[(dx, dy), ...]``.
        box: every shift in ``[-box, box]²``.
        line: ``("x" | "y", [d, ...])``: shifts along one axis.
        period: grid size in cells; translations are then composed modulo it (needed for the
            set to be closed, e.g. ``Shifts(line=("x", range(n)), period=n)`` is the cyclic group).
            A pair ``(p_x, p_y)`` (``None`` for a non-periodic axis) serves rectangular grids:
            ``Shifts(line=("x", range(n_x)), period=(n_x, None))`` on an ``n_y × n_x`` channel.
    """

    def __init__(
        self,
        shifts: Iterable[Sequence[int]] | None = None,
        *,
        box: int | None = None,
        line: tuple[str, Sequence[int]] | None = None,
        period: int | Sequence[int | None] | None = None,
    ):
        values = _shift_list(shifts, box, line, integer=True)
        table = {("e" if s == (0.0, 0.0) else _shift_name(s)): Affine(IDENTITY, s) for s in values}
        super().__init__("Shifts", table, period=period)
        self._record_arguments(shifts=[list(v) for v in values], period=plain_period(period))


class FourierShifts(LatticeGroup):
    """Translations by arbitrary (sub-pixel) offsets in cells, applied as Fourier phase ramps.

    Exact for band-limited fields (no energy at the Nyquist modes of even grids); flagged inexact
    (:meth:`is_exact` is ``False``) unless the offset is an integer, where it agrees with
    :class:`Shifts` to round-off. Same arguments as :class:`Shifts`, with float offsets allowed.
    """

    def __init__(
        self,
        shifts: Iterable[Sequence[float]] | None = None,
        *,
        box: int | None = None,
        line: tuple[str, Sequence[float]] | None = None,
        period: int | Sequence[int | None] | None = None,
    ):
        values = _shift_list(shifts, box, line, integer=False)
        table = {("e" if s == (0.0, 0.0) else _shift_name(s)): Affine(IDENTITY, s) for s in values}
        super().__init__("FourierShifts", table, period=period, subpixel=True)
        self._record_arguments(shifts=[list(v) for v in values], period=plain_period(period))


class Product(LatticeGroup):
    """All products ``a ∘ b`` of an element of ``first`` and one of ``second`` (``b`` acts first).

    Element names are ``"a|b"``, with identity components dropped (``"r"``, ``"x1y0"``,
    ``"r|x1y0"``) and the identity called ``"e"``. The action and :meth:`compose` use the affine
    maps themselves, so the result is correct even when the factors do not commute (rotations and
    translations form a semidirect product): ``compose`` raises only when the set is not closed.

    Args:
        first: the factor applied second (e.g. ``D4()``).
        second: the factor applied first (e.g. ``Shifts(box=1, period=n)``).
        name: short name for logged keys (default ``"{first}x{second}"``).
    """

    def __init__(self, first: LatticeGroup, second: LatticeGroup, name: str | None = None):
        for factor in (first, second):
            if not isinstance(factor, LatticeGroup):
                raise TypeError(
                    f"Product combines planar lattice groups (D4, C4, Shifts, ...); "
                    f"got {type(factor).__name__}"
                )
        table: dict[str, Affine] = {}
        for b_name, b in second.table.items():
            for a_name, a in first.table.items():
                parts = [n for n, m in ((a_name, a), (b_name, b)) if m != Affine()]
                label = "|".join(parts) if parts else "e"
                if label in table:
                    raise ValueError(f"element name {label!r} occurs twice in the product")
                table[label] = a @ b
        merged = []
        for axis, (p, q) in enumerate(zip(first.periods, second.periods, strict=True)):
            if p is not None and q is not None and p != q:
                raise ValueError(
                    f"the factors have different periods along {'xy'[axis]}: {p} and {q} cells; "
                    "build both for the same grid"
                )
            merged.append(p if p is not None else q)
        simple = [f.period for f in (first, second) if isinstance(f.period, int)]
        period: int | tuple[int | None, int | None] | None
        if merged == [None, None]:
            period = None
        elif simple and merged == [simple[0], simple[0]]:
            period = simple[0]
        else:
            period = (merged[0], merged[1])
        super().__init__(
            name or f"{first.name}x{second.name}",
            table,
            period=period,
            subpixel=first.subpixel or second.subpixel,
        )
        self.factors = (first, second)
        self._record_arguments(first=first, second=second, name=name)
