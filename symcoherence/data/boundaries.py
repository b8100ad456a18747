r"""The lattice symmetries a rectangular grid admits, given its boundary conditions.

Each axis of an ``n_y × n_x`` grid (layout ``(..., H, W)``, ``x`` the last axis) is

* ``"periodic"``: every integer shift along it and the mirror about grid point 0 (``x ↦ −x mod n``)
  map the domain onto itself;
* ``"walls"`` (the same wall condition at both ends): the mirror about the domain's centre,
  ``x ↦ (n − 1) − x`` (a plain flip of the axis), maps it onto itself, shifts do not;
* anything else (open, mixed, or a boundary inside the domain): nothing along it is assumed.

:func:`admissible_groups` turns that into ``(symmetry_group, diagnostic_group, note)``:

* both axes periodic on a square grid with equal spacing: ``D4 ⋉`` integer shifts (named
  ``"D4xShifts"``), measured by default over ``D4``;
* both periodic, rectangular: the mirrors ``{e, r2, s, sr2}`` (``"D2"``) ``⋉`` shifts;
* one axis periodic: the shifts along it and the mirrors the other axis allows (``"Mirrors"``:
  ``{e, s, sr2, r2}`` between walls, ``"Mirror"``: ``{e, s}`` or ``{e, sr2}`` otherwise);
* neither periodic: the trivial group ``{e}`` (``"Trivial"``).

Element names follow :class:`~symcoherence.groups.D4` by their linear part: ``s`` flips ``x``,
``sr2`` flips ``y``, ``r2`` both. This is geometry only: forcing, gravity, moving walls or a mean
flow can break a mirror or a shift that the domain allows, and then the group must be declared by
hand. Large grids get the shifts by multiples of a stride (at most ``MAX_SHIFTS_PER_AXIS`` per axis),
so that the element table stays small; the note says so.

Example:
    >>> symmetry, diagnostic, note = admissible_groups(("periodic", "walls"), (16, 8))
    >>> symmetry.name, diagnostic.elements
    ('MirrorsxShifts', ('e', 's', 'sr2', 'r2'))
"""

from __future__ import annotations

from collections.abc import Sequence

from symcoherence.groups import D4, Affine, LatticeGroup, Product, Shifts

MAX_SHIFTS_PER_AXIS = 128
"""Integer shifts listed per periodic axis; larger grids use a stride (a divisor of ``n``)."""

AXIS_KINDS = ("periodic", "walls", "other")


def shift_stride(n: int) -> int:
    """The smallest divisor ``k`` of ``n`` with ``n / k ≤ MAX_SHIFTS_PER_AXIS`` (shifts ``0, k, …``)."""
    return next(k for k in range(1, n + 1) if n % k == 0 and n // k <= MAX_SHIFTS_PER_AXIS)


def trivial_group() -> LatticeGroup:
    """The group ``{e}``: no symmetry is assumed."""
    return LatticeGroup("Trivial", {"e": Affine()})


def admissible_groups(
    axes: Sequence[str], grid: Sequence[int], *, square: bool | None = None
) -> tuple[LatticeGroup, LatticeGroup, str]:
    """``(symmetry_group, diagnostic_group, note)`` for the axis kinds of a grid.

    See the module docstring for the rules.

    Args:
        axes: the kind of the ``x`` and ``y`` axes: ``"periodic"``, ``"walls"`` or ``"other"``.
        grid: ``(n_x, n_y)`` grid points.
        square: whether the domain is a square with equal spacing (default: ``n_x == n_y``).

    Raises:
        ValueError: for an unknown axis kind or a grid that is not two positive sizes.
    """
    axes = tuple(axes)
    if len(axes) != 2 or any(kind not in AXIS_KINDS for kind in axes):
        raise ValueError(f"axes must be two of {list(AXIS_KINDS)} (x, y), got {axes!r}")
    nx, ny = (int(n) for n in grid)
    square = nx == ny if square is None else square
    d4 = D4().table
    periodic = [kind == "periodic" for kind in axes]
    if all(periodic):
        kx, ky = shift_stride(nx), shift_stride(ny)
        shifts = Shifts(
            [(dx, dy) for dy in range(0, ny, ky) for dx in range(0, nx, kx)],
            period=nx if (square and nx == ny) else (nx, ny),
        )
        if square and nx == ny:
            point, name = D4(), "D4"
        else:
            point = LatticeGroup("D2", {n: d4[n] for n in ("e", "r2", "s", "sr2")})
            name = "D2"
        note = (
            f"{'square' if point.name == 'D4' else 'rectangular'} periodic domain: {name} ⋉ shifts"
        )
        if (kx, ky) != (1, 1):
            note += f" by multiples of ({kx}, {ky}) cells (declare symmetry_group for all shifts)"
        return Product(point, shifts, name=f"{name}xShifts"), point, note
    if any(periodic):
        axis = 0 if periodic[0] else 1
        other = 1 - axis
        n = (nx, ny)[axis]
        k = shift_stride(n)
        period = (n, None) if axis == 0 else (None, n)
        shifts = Shifts(line=("xy"[axis], list(range(0, n, k))), period=period)
        flip_periodic = "s" if axis == 0 else "sr2"
        table = {"e": Affine(), flip_periodic: d4[flip_periodic]}
        if axes[other] == "walls":
            flip_walls = "sr2" if axis == 0 else "s"
            back = (nx - 1, ny - 1)[other]  # the flip x ↦ (n − 1) − x along the wall axis
            offset = (0.0, float(back)) if other == 1 else (float(back), 0.0)
            table[flip_walls] = Affine(d4[flip_walls].matrix, offset)
            table["r2"] = Affine(d4["r2"].matrix, offset)
        mirrors = LatticeGroup("Mirrors" if len(table) > 2 else "Mirror", table, period=period)
        note = (
            f"periodic along {'xy'[axis]}, {axes[other]} along {'xy'[other]}: shifts along "
            f"{'xy'[axis]} and the mirrors {list(table)[1:]}"
        )
        if k != 1:
            note += f"; shifts by multiples of {k} cells (declare symmetry_group for all shifts)"
        return Product(mirrors, shifts, name=f"{mirrors.name}xShifts"), mirrors, note
    group = trivial_group()
    return group, group, f"no periodic axis ({axes[0]} along x, {axes[1]} along y): no symmetry"
