r"""One HDF5 file of The Well (PolymathicAI, 2024) as a trajectory source.

The Well's files (its ``docs/data_format.md``) hold, for ``B`` trajectories of ``T`` steps on an
``n_x × n_y`` grid:

* root attributes ``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories``;
* ``dimensions/`` with ``time`` and one coordinate array per name in its ``spatial_dims``
  attribute (``["x", "y"]``);
* ``boundary_conditions/<name>`` with attributes ``associated_dims``, ``bc_type`` (``periodic``,
  ``wall``, ``open``, in any case) and a boolean ``mask`` over the associated dimensions that is
  true where the condition holds;
* ``t0_fields/`` (scalars), ``t1_fields/`` (vectors, trailing dimension ``D``) and ``t2_fields/``
  (rank-2 tensors, trailing ``D × D``; the docs write ``D²``, both are read), each listing its
  datasets in the attribute ``field_names``; every field has ``dim_varying``, ``sample_varying`` and
  ``time_varying`` attributes, and a tensor ``symmetric`` / ``antisymmetric``. A field that does not
  vary along an axis omits it and is broadcast.

Arrays are stored **x first**: ``(B, T, x, y[, D[, D]])`` with components in ``(x, y)`` order. This
project's layout is ``(..., C, H, W)`` with ``x`` the last axis, so every field is transposed to
``(B, T, C, y, x)``: scalars become one channel (``"scalar"``, or ``"pseudoscalar"`` when named in
``pseudoscalars``: The Well itself treats every rank-0 field as a true scalar), vectors two
``(u_x, u_y)`` (``"vector"``), tensors four ``(T_xx, T_xy, T_yx, T_yy)`` (``"tensor"``; a symmetric
tensor is stored, and kept, with all four).

The admissible group is derived from ``boundary_conditions`` and the grid
(:func:`~symcoherence.data.boundaries.admissible_groups`): all axes periodic on a square, uniform
grid gives ``D4`` and integer shifts; one periodic axis its shifts and the mirrors the walls allow;
otherwise the trivial group, with a logged message. ``source.symmetry_note`` says which rule
applied. A declared ``symmetry_group`` / ``diagnostic_group`` overrides the derived one.

Example:
    >>> source = TheWellSource("gray_scott_reaction_diffusion_F_0.014_k_0.054.hdf5")  # doctest: +SKIP
    >>> source.field_type, source.symmetry_group.name, source.shape  # doctest: +SKIP
    (FieldType(['scalar', 'scalar']), 'D4xShifts', (200, 1001, 2, 128, 128))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import h5py
import numpy as np

from symcoherence.data.boundaries import admissible_groups, trivial_group
from symcoherence.data.file_source import ConvertedFileSource
from symcoherence.data.source import declare
from symcoherence.groups import FieldType, Group

logger = logging.getLogger(__name__)

ORDERS = ("t0_fields", "t1_fields", "t2_fields")
_KIND = {1: "vector", 2: "tensor"}
_ROOT_ATTRIBUTES = ("n_spatial_dims", "n_trajectories")
_GROUPS = ("dimensions", *ORDERS)
_UNIFORM_RTOL = 1e-3  # relative spread of the grid spacing that still counts as uniform


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _names(value: Any) -> list[str]:
    """An attribute holding one name or a list of names, as a list of ``str``."""
    if isinstance(value, (str, bytes)):
        return [_text(value)]
    return [_text(v) for v in np.asarray(value).reshape(-1)]


@dataclass(frozen=True)
class TheWellSource(ConvertedFileSource):
    """Trajectories of one of The Well's HDF5 files (see the module docstring).

    Args:
        path: the ``.hdf5`` file.
        fields: names of the fields to use, in channel order (``None``: every time-varying field,
            scalars first, then vectors, then tensors, in the file's ``field_names`` order).
        pseudoscalars: names of rank-0 fields that change sign under reflections (vorticity).
        symmetry_group: the full admissible group (a Group, ``"D4"`` or a spec); ``None`` derives
            it from the boundary conditions and the grid.
        diagnostic_group: the group measured by default; ``None`` takes the derived one (or the
            declared ``symmetry_group``).
        num_trajectories, first_frame, num_frames, frame_stride, cache: the window read and
            whether it is cached (:class:`~symcoherence.data.file_source.ConvertedFileSource`).

    Attributes:
        symmetry_note: which rule gave the groups (or that they were declared).
        dataset_name: the file's ``dataset_name`` attribute.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not in The Well's layout, is not 2-D, a field name is unknown,
            a pseudoscalar is not a rank-0 field among ``fields``, a field's shape contradicts its
            attributes, or the selection is empty.
    """

    cache_prefix = "the_well"

    path: str | os.PathLike
    fields: Sequence[str] | None = None
    _: KW_ONLY
    pseudoscalars: Sequence[str] = ()
    symmetry_group: Group | str | dict | None = None
    diagnostic_group: Group | str | dict | None = None

    def __post_init__(self) -> None:
        if not os.path.exists(self.path):
            raise FileNotFoundError(
                f"no file of The Well at {str(self.path)!r}; pass the path of a downloaded .hdf5 "
                "file (e.g. --data.init_args.source.init_args.path=...)"
            )
        if isinstance(self.fields, str) or isinstance(self.pseudoscalars, str):
            raise TypeError(
                f"fields and pseudoscalars are lists of names, got {self.fields!r} and "
                f"{self.pseudoscalars!r}; write fields=['velocity']"
            )
        where = str(self.path)
        with h5py.File(self.path, "r") as file:
            _check_layout(file, where)
            spatial = _names(file["dimensions"].attrs["spatial_dims"])
            grid = tuple(int(np.asarray(file["dimensions"][d]).shape[-1]) for d in spatial)
            available = {
                _text(name): order
                for order, group in enumerate(ORDERS)
                for name in _names(file[group].attrs.get("field_names", []))
            }
            chosen = self._choose(file, available, where)
            layout = [self._describe(file, name, available[name], grid, where) for name in chosen]
            count = int(file.attrs["n_trajectories"])
            frames = int(np.asarray(file["dimensions"]["time"]).shape[-1])
            time = np.asarray(file["dimensions"]["time"][()], dtype=np.float64)
            derived = _derive_groups(file, spatial, grid)
            name = _text(file.attrs.get("dataset_name", ""))
        self._select(count, frames, where)
        kinds = [entry["kind"] for entry in layout]
        object.__setattr__(self, "field_type", FieldType(kinds))
        object.__setattr__(self, "dataset_name", name)
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_grid", grid)
        object.__setattr__(self, "_times", time.reshape(-1, frames)[0][self._frames])
        self._declare_groups(derived)
        shape = (self._count, len(self._frames), self.field_type.num_channels, grid[1], grid[0])
        object.__setattr__(self, "_shape", shape)
        declare(self, shape, where)

    # ------------------------------------------------------------------ construction
    def _choose(self, file: h5py.File, available: dict[str, int], where: str) -> list[str]:
        if self.fields is None:
            chosen = [
                name
                for name, order in available.items()
                if bool(file[ORDERS[order]][name].attrs.get("time_varying", True))
            ]
            if not chosen:
                raise ValueError(
                    f"{where} has no time-varying field; name the fields to use, e.g. "
                    f"fields={sorted(available)[:2]}"
                )
        else:
            chosen = list(self.fields)
            unknown = [name for name in chosen if name not in available]
            if unknown:
                raise ValueError(
                    f"{where} has no field(s) {unknown}; its fields are {sorted(available)}"
                )
        wrong = [name for name in self.pseudoscalars if name not in chosen or available[name] != 0]
        if wrong:
            raise ValueError(
                f"pseudoscalars {wrong} must be rank-0 fields among the fields used "
                f"{chosen} (t0_fields of {where}: "
                f"{sorted(n for n, o in available.items() if o == 0)})"
            )
        return chosen

    def _describe(
        self, file: h5py.File, name: str, order: int, grid: tuple[int, int], where: str
    ) -> dict[str, Any]:
        """How to read one field: its storage axes and the kind it becomes."""
        dataset = file[ORDERS[order]][name]
        attributes = dataset.attrs
        samples = bool(attributes.get("sample_varying", True))
        varying_time = bool(attributes.get("time_varying", True))
        dims = [bool(v) for v in np.asarray(attributes.get("dim_varying", [True, True]))]
        leading: list[int] = []
        if samples:
            leading.append(int(file.attrs["n_trajectories"]))
        if varying_time:
            leading.append(int(np.asarray(file["dimensions"]["time"]).shape[-1]))
        spatial = [n for n, varies in zip(grid, dims, strict=True) if varies]
        base = (*leading, *spatial)
        accepted = {0: [base], 1: [(*base, 2)], 2: [(*base, 2, 2), (*base, 4)]}[order]
        if tuple(dataset.shape) not in accepted:
            raise ValueError(
                f"{where}: {ORDERS[order]}/{name} has shape {tuple(dataset.shape)} but its "
                f"attributes (sample_varying={samples}, time_varying={varying_time}, "
                f"dim_varying={dims}) and a 2-D grid {grid} (x, y) make it "
                f"{' or '.join(str(s) for s in accepted)}"
            )
        if order == 0:
            kind = "pseudoscalar" if name in self.pseudoscalars else "scalar"
        else:
            kind = _KIND[order]
        return {
            "name": name,
            "group": ORDERS[order],
            "kind": kind,
            "samples": samples,
            "time": varying_time,
            "dims": dims,
            "symmetric": bool(attributes.get("symmetric", False)),
        }

    def _declare_groups(self, derived: tuple[Group, Group, str]) -> None:
        symmetry, diagnostic, note = derived
        if self.symmetry_group is not None:
            note = "declared by the caller"
        else:
            object.__setattr__(self, "symmetry_group", symmetry)
            if self.diagnostic_group is None:
                object.__setattr__(self, "diagnostic_group", diagnostic)
            if symmetry.name == "Trivial":
                logger.warning(
                    "%s: %s; measuring the trivial group. Declare symmetry_group= if the physics "
                    "has symmetries the boundary conditions do not show",
                    self.path,
                    note,
                )
        object.__setattr__(self, "symmetry_note", note)

    # ------------------------------------------------------------------ reading
    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(N, T, C, H, W)`` of the window: ``H = n_y``, ``W = n_x``."""
        return self._shape  # type: ignore[attr-defined]

    def conversion(self) -> dict[str, Any]:
        """The fields and their kinds (what the key hashes besides the selection)."""
        return {"fields": [(e["group"], e["name"], e["kind"]) for e in self._layout]}

    def _read(self, start: int, count: int) -> np.ndarray:
        """Trajectories ``start … start + count − 1`` of the window, ``(count, T, C, n_y, n_x)``."""
        steps = len(self._frames)
        nx, ny = self._grid
        blocks = []
        with h5py.File(self.path, "r") as file:
            for entry in self._layout:
                dataset = file[entry["group"]][entry["name"]]
                index: tuple[slice, ...] = ()
                if entry["samples"]:
                    index += (slice(start, start + count),)
                if entry["time"]:
                    index += (self.frame_slice,)
                values = np.asarray(dataset[index] if index else dataset[()], dtype=np.float32)
                width = {"vector": 2, "tensor": 4}.get(entry["kind"], 1)
                spatial = [
                    n if varies else 1 for n, varies in zip((nx, ny), entry["dims"], strict=True)
                ]
                values = values.reshape(
                    count if entry["samples"] else 1,
                    steps if entry["time"] else 1,
                    *spatial,
                    width,  # tensors (D, D) -> 2 i + j: (xx, xy, yx, yy)
                )
                values = np.broadcast_to(values, (count, steps, nx, ny, width))
                blocks.append(values.transpose(0, 1, 4, 3, 2))  # (x, y, c) -> (c, y, x)
        return np.ascontiguousarray(np.concatenate(blocks, axis=2))


def _check_layout(file: h5py.File, where: str) -> None:
    missing = [f"@{a}" for a in _ROOT_ATTRIBUTES if a not in file.attrs]
    missing += [f"{g}/" for g in _GROUPS if g not in file]
    if not missing and "spatial_dims" not in file["dimensions"].attrs:
        missing.append("dimensions/@spatial_dims")
    if missing:
        raise ValueError(
            f"{where} is not a file of The Well: it lacks {', '.join(missing)} (The Well's files "
            "have @n_spatial_dims, @n_trajectories, dimensions/, t0_fields/, t1_fields/, "
            "t2_fields/); read other "
            "HDF5 files with HDF5Source"
        )
    dims = int(file.attrs["n_spatial_dims"])
    if dims != 2:
        raise ValueError(
            f"{where} holds {dims}-D data (n_spatial_dims = {dims}); TheWellSource reads 2-D "
            "datasets only"
        )
    spatial = _names(file["dimensions"].attrs["spatial_dims"])
    absent = [d for d in spatial if d not in file["dimensions"]]
    if len(spatial) != 2 or absent:
        raise ValueError(
            f"{where}: dimensions/@spatial_dims is {spatial}, expected two names with coordinate "
            f"arrays in dimensions/ (missing {absent})"
        )


def _uniform(coordinates: np.ndarray) -> bool:
    if coordinates.ndim != 1:
        return False  # coordinates that vary between trajectories
    if coordinates.size < 3:
        return True
    steps = np.diff(coordinates.astype(np.float64))
    return bool(np.all(np.abs(steps - steps.mean()) <= _UNIFORM_RTOL * abs(steps.mean())))


def _ends(file: h5py.File, spatial: list[str]) -> tuple[dict[tuple[int, int], str], bool]:
    """The condition at each ``(axis, end)`` (default open) and whether one lies inside."""
    ends = {(axis, end): "open" for axis in range(2) for end in range(2)}
    inside = False
    if "boundary_conditions" not in file:
        return ends, inside
    for condition in file["boundary_conditions"].values():
        kind = _text(condition.attrs.get("bc_type", "open")).lower()
        associated = [d for d in spatial if d in _names(condition.attrs.get("associated_dims", []))]
        if "mask" not in condition or not associated:
            continue
        mask = np.asarray(condition["mask"][()], dtype=bool)
        if mask.ndim != len(associated):
            continue
        interior = mask[tuple(slice(1, -1) for _ in range(mask.ndim))]
        inside = inside or bool(interior.any())
        for position, name in enumerate(associated):
            axis = spatial.index(name)
            for end, index in ((0, 0), (1, -1)):
                edge = np.take(mask, index, axis=position)
                # as The Well's reader: a wall must cover the whole end, periodic/open any of it
                if (edge.all() if kind == "wall" else edge.any()) and edge.size:
                    ends[(axis, end)] = kind
    return ends, inside


def _derive_groups(
    file: h5py.File, spatial: list[str], grid: tuple[int, int]
) -> tuple[Group, Group, str]:
    grid_type = _text(file.attrs.get("grid_type", "cartesian")).lower()
    if grid_type != "cartesian":
        group = trivial_group()
        return group, group, f"grid_type is {grid_type!r}, not 'cartesian': no symmetry assumed"
    coordinates = [np.asarray(file["dimensions"][d][()]) for d in spatial]
    uniform = [_uniform(c) for c in coordinates]
    ends, inside = _ends(file, spatial)
    if inside:
        group = trivial_group()
        return group, group, "a boundary condition holds inside the domain: no symmetry assumed"
    axes = []
    for axis in range(2):
        pair = (ends[(axis, 0)], ends[(axis, 1)])
        if not uniform[axis]:
            axes.append("other")
        elif pair == ("periodic", "periodic"):
            axes.append("periodic")
        elif pair == ("wall", "wall"):
            axes.append("walls")
        else:
            axes.append("other")
    spacing = [
        abs(float(c.reshape(-1)[1]) - float(c.reshape(-1)[0])) if c.size > 1 else 1.0
        for c in coordinates
    ]
    square = grid[0] == grid[1] and abs(spacing[0] - spacing[1]) <= _UNIFORM_RTOL * spacing[0]
    symmetry, diagnostic, note = admissible_groups(axes, grid, square=square)
    if not all(uniform):
        note += "; non-uniform coordinates along " + "".join(
            "xy"[a] for a in range(2) if not uniform[a]
        )
    return symmetry, diagnostic, note
