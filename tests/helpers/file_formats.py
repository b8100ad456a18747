"""Small synthetic files in the published layouts of The Well (HDF5) and PDEGym (NetCDF4).

The Well (``docs/data_format.md`` of PolymathicAI/the_well): root attributes, ``dimensions/`` with
``spatial_dims``, ``boundary_conditions/<name>`` with ``associated_dims``, ``associated_fields``,
``bc_type``, ``sample_varying``, ``time_varying`` and a ``mask`` (plus ``values``), ``scalars/`` and
``t0_fields/``, ``t1_fields/``, ``t2_fields/`` with ``field_names``; every field has
``dim_varying``, ``sample_varying``, ``time_varying`` (tensors also ``symmetric``,
``antisymmetric``). Arrays are x first: ``(B, T, x, y[, D[, D]])``.

PDEGym (the ``camlab-ethz/NS-*`` and ``CE-*`` dataset cards): one variable, ``velocity`` or
``data``, of shape ``(N, T, C, x, y)``. NetCDF4 is HDF5; the dimension scales netCDF writes are
left out (h5py reads variables as datasets either way).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np


def boundary(kind: str, axis: str, n: int, ends: tuple[bool, bool] = (True, True)) -> dict:
    """One axis-aligned boundary condition: ``kind`` at the chosen ends of ``axis``."""
    mask = np.zeros(n, dtype=bool)
    mask[0], mask[-1] = ends
    return {"name": f"{axis}_{kind.lower()}", "kind": kind, "dims": [axis], "mask": mask}


def write_the_well(
    path: Path,
    fields: dict[str, dict],
    *,
    nx: int = 8,
    ny: int = 6,
    steps: int = 5,
    trajectories: int = 3,
    boundaries: list[dict] | None = None,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    n_spatial_dims: int = 2,
    grid_type: str = "cartesian",
) -> Path:
    """Write a file of The Well. ``fields``: name -> ``{"order": 0|1|2, "data": array, ...}``
    with optional ``sample_varying``, ``time_varying``, ``dim_varying``, ``symmetric``."""
    if boundaries is None:
        boundaries = [boundary("PERIODIC", "x", nx), boundary("PERIODIC", "y", ny)]
    x = np.linspace(0, 1, nx, endpoint=False, dtype=np.float32) if x is None else x
    y = np.linspace(0, 1, ny, endpoint=False, dtype=np.float32) if y is None else y
    with h5py.File(path, "w") as file:
        file.attrs["simulation_parameters"] = ["alpha"]
        file.attrs["alpha"] = 0.5
        file.attrs["dataset_name"] = "synthetic"
        file.attrs["grid_type"] = grid_type
        file.attrs["n_spatial_dims"] = n_spatial_dims
        file.attrs["n_trajectories"] = trajectories
        dims = file.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        time = dims.create_dataset("time", data=np.linspace(0, 1, steps, dtype=np.float32))
        time.attrs["sample_varying"] = False
        for name, values in (("x", x), ("y", y)):
            coordinate = dims.create_dataset(name, data=values)
            coordinate.attrs["sample_varying"] = False
            coordinate.attrs["time_varying"] = False
        conditions = file.create_group("boundary_conditions")
        for entry in boundaries:
            group = conditions.create_group(entry["name"])
            group.attrs["associated_dims"] = entry["dims"]
            group.attrs["associated_fields"] = []
            group.attrs["bc_type"] = entry["kind"]
            group.attrs["sample_varying"] = False
            group.attrs["time_varying"] = False
            group.create_dataset("mask", data=entry["mask"])
            group.create_dataset("values", data=np.zeros(int(entry["mask"].sum()), np.float32))
        scalars = file.create_group("scalars")
        scalars.attrs["field_names"] = ["alpha"]
        alpha = scalars.create_dataset("alpha", data=np.array(0.5, dtype=np.float32))
        alpha.attrs["sample_varying"] = False
        alpha.attrs["time_varying"] = False
        for order in range(3):
            group = file.create_group(f"t{order}_fields")
            names = [name for name, spec in fields.items() if spec["order"] == order]
            group.attrs["field_names"] = names
            for name in names:
                spec = fields[name]
                dataset = group.create_dataset(name, data=np.asarray(spec["data"], np.float32))
                dataset.attrs["dim_varying"] = np.array(spec.get("dim_varying", [True, True]))
                dataset.attrs["sample_varying"] = spec.get("sample_varying", True)
                dataset.attrs["time_varying"] = spec.get("time_varying", True)
                if order == 2:
                    dataset.attrs["symmetric"] = spec.get("symmetric", False)
                    dataset.attrs["antisymmetric"] = False
    return path


def divergence_free_velocity(trajectories: int, steps: int, n: int, seed: int = 0) -> np.ndarray:
    """``(N, T, 2, y, x)`` velocities ``(∂_y ψ, −∂_x ψ)`` of random band-limited stream functions
    on the periodic unit square (this project's layout, x last)."""
    rng = np.random.default_rng(seed)
    grid = np.arange(n) / n
    X, Y = np.meshgrid(grid, grid, indexing="xy")  # X varies along the last axis
    out = np.zeros((trajectories, steps, 2, n, n))
    for b in range(trajectories):
        for t in range(steps):
            for kx in range(-2, 3):
                for ky in range(-2, 3):
                    a = rng.normal()
                    phase = 2 * math.pi * (kx * X + ky * Y)
                    # ψ = a sin(phase): u_x = ∂_y ψ, u_y = −∂_x ψ
                    out[b, t, 0] += a * 2 * math.pi * ky * np.cos(phase)
                    out[b, t, 1] -= a * 2 * math.pi * kx * np.cos(phase)
    return out


def write_pdegym(path: Path, variable: str, data_x_last: np.ndarray, *, x_first=True) -> Path:
    """Write ``(N, T, C, y, x)`` data as PDEGym stores it: ``(N, T, C, x, y)`` when ``x_first``."""
    stored = data_x_last.swapaxes(-1, -2) if x_first else data_x_last
    with h5py.File(path, "w") as file:
        file.create_dataset(variable, data=np.asarray(stored, np.float32))
    return path
