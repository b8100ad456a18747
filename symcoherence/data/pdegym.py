r"""PDEGym's NetCDF4 files (camlab-ethz; the Poseidon data) as a trajectory source.

NetCDF4 files are HDF5 files, so they are read with ``h5py`` (variables are datasets). The layouts
(the dataset cards of ``camlab-ethz/NS-*`` and ``camlab-ethz/CE-*``):

* Navier–Stokes (``NS-Gauss``, ``NS-Sines``, ``NS-BB``, …): a variable ``velocity`` of shape
  ``(N, T, C, x, y)``; channels 0 and 1 are the horizontal and vertical velocity ``(u_x, u_y)``,
  a third channel, where present, a passive tracer. The frame is ``["vector"]`` (with
  ``tracer=True``: ``["vector", "scalar"]``).
* Compressible Euler (``CE-RP``, ``CE-CRP``, ``CE-RPUI``, …): a variable ``data`` of shape
  ``(N, T, 5, x, y)`` holding ``(ρ, u_x, u_y, p, E)``. ``variables="conserved"`` (the seed paper's
  choice, the default) gives ``(ρ, ρu_x, ρu_y, E)``; ``"primitive"`` gives ``(ρ, u_x, u_y, p)``; both
  are ``["scalar", "vector", "scalar"]``.

The cards list the spatial axes as ``x`` then ``y``, so by default (``x_first=True``) the last two
axes are swapped into this project's ``(..., C, H, W)`` with ``x`` last. For Navier–Stokes that
orientation is checked on the first frame read: the velocity must be divergence-free,
``∂_x u_x + ∂_y u_y ≈ 0``, with the assumed axes; if it is so only with the other assignment the
source refuses to load and names the fix (``x_first=False``), because axes swapped against the
components fake a failure on half of ``D4``.

The data live on the periodic unit square at ``128²``, so the symmetry group is ``D4`` and every
integer shift (``"D4xShifts"``), measured by default over ``D4``; declare another group where the
physics has less (a forcing, walls).

Example:
    >>> source = PDEGymSource("NS-Sines.nc")  # doctest: +SKIP
    >>> source.field_type, source.shape  # doctest: +SKIP
    (FieldType(['vector']), (20000, 21, 2, 128, 128))
"""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass
from typing import Any

import h5py
import numpy as np
import torch

from symcoherence.data.boundaries import admissible_groups
from symcoherence.data.file_source import ConvertedFileSource
from symcoherence.data.source import declare
from symcoherence.data.spectral import spectral_derivative
from symcoherence.groups import FieldType, Group

LAYOUTS = {"ns": "velocity", "ce": "data"}
"""Layout name -> the variable that holds its trajectories."""

VARIABLES = ("conserved", "primitive")
_DIVERGENCE_FREE = 0.05  # relative divergence below which a velocity counts as divergence-free


def relative_divergence(velocity: torch.Tensor) -> float:
    r"""``‖∂_x u_x + ∂_y u_y‖ / (‖∂_x u_x‖² + ‖∂_y u_y‖²)^{1/2}`` on the periodic unit square.

    Args:
        velocity: ``(..., 2, H, W)`` with ``x`` the last axis; derivatives are spectral.
    """
    u = velocity.to(torch.float64)
    dx = spectral_derivative(u[..., 0, :, :], -1)
    dy = spectral_derivative(u[..., 1, :, :], -2)
    scale = float((dx.square().sum() + dy.square().sum()).sqrt())
    return float((dx + dy).norm()) / scale if scale > 0 else 0.0


@dataclass(frozen=True)
class PDEGymSource(ConvertedFileSource):
    """Trajectories of one of PDEGym's Navier–Stokes or compressible-Euler files (module docstring).

    Args:
        path: the assembled ``.nc`` file.
        layout: ``"ns"`` (variable ``velocity``) or ``"ce"`` (variable ``data``); ``None`` picks the
            one whose variable the file holds.
        variable: the variable to read (default: the layout's).
        tracer: (NS) add the passive tracer, channel 2, as a scalar.
        variables: (CE) ``"conserved"`` ``(ρ, ρu_x, ρu_y, E)`` or ``"primitive"`` ``(ρ, u_x, u_y, p)``.
        x_first: the file stores ``(…, x, y)`` (as the dataset cards say); ``False`` for
            ``(…, y, x)``.
        check_orientation: (NS) refuse a velocity that is divergence-free only with the other axes.
        symmetry_group: the full admissible group (default: ``D4`` and every integer shift).
        diagnostic_group: the group measured by default (default: ``D4``, or the declared
            ``symmetry_group``).
        num_trajectories, first_frame, num_frames, frame_stride, cache: the window read and
            whether it is cached (:class:`~symcoherence.data.file_source.ConvertedFileSource`).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a file without the variable, a variable that is not ``(N, T, C, H, W)``
            with enough channels, an unknown option, or a velocity whose axes contradict
            ``x_first``.
    """

    cache_prefix = "pdegym"

    path: str | os.PathLike
    layout: str | None = None
    _: KW_ONLY
    variable: str | None = None
    tracer: bool = False
    variables: str = "conserved"
    x_first: bool = True
    check_orientation: bool = True
    symmetry_group: Group | str | dict | None = None
    diagnostic_group: Group | str | dict | None = None

    def __post_init__(self) -> None:
        if not os.path.exists(self.path):
            raise FileNotFoundError(
                f"no PDEGym file at {str(self.path)!r}; pass the path of an assembled .nc file "
                "(e.g. --data.init_args.source.init_args.path=...)"
            )
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)} or None, got {self.layout!r}")
        if self.variables not in VARIABLES:
            raise ValueError(f"variables must be one of {list(VARIABLES)}, got {self.variables!r}")
        where = str(self.path)
        with h5py.File(self.path, "r") as file:
            layout = self.layout or next((k for k, v in LAYOUTS.items() if v in file), None)
            variable = self.variable or LAYOUTS.get(layout or "", "")
            if layout is None or variable not in file:
                raise ValueError(
                    f"{where} has no variable {variable or ' or '.join(LAYOUTS.values())!r} "
                    f"(PDEGym's NS files hold 'velocity', its CE files 'data'); it holds "
                    f"{sorted(file.keys())}. Pass variable= for another name"
                )
            shape = tuple(file[variable].shape)
        needed = 5 if layout == "ce" else (3 if self.tracer else 2)
        if len(shape) != 5 or shape[2] < needed:
            raise ValueError(
                f"{where}:{variable} has shape {shape}; the {layout.upper()} layout needs "
                f"(N, T, C, x, y) with at least {needed} channels"
            )
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "variable", variable)
        self._select(shape[0], shape[1], where)
        kinds = ["vector", "scalar"] if self.tracer else ["vector"]
        kinds = ["scalar", "vector", "scalar"] if layout == "ce" else kinds
        object.__setattr__(self, "field_type", FieldType(kinds))
        object.__setattr__(self, "_times", np.asarray(self._frames, dtype=np.float64))
        nx, ny = (shape[3], shape[4]) if self.x_first else (shape[4], shape[3])
        if self.symmetry_group is None:
            symmetry, diagnostic, _ = admissible_groups(("periodic", "periodic"), (nx, ny))
            object.__setattr__(self, "symmetry_group", symmetry)
            if self.diagnostic_group is None:
                object.__setattr__(self, "diagnostic_group", diagnostic)
        window = (self._count, len(self._frames), self.field_type.num_channels, ny, nx)
        object.__setattr__(self, "_shape", window)
        declare(self, window, where)
        if layout == "ns" and self.check_orientation:
            self._check_orientation(where)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(N, T, C, H, W)`` of the window."""
        return self._shape  # type: ignore[attr-defined]

    def conversion(self) -> dict[str, Any]:
        """Layout, variable and channel options (what the key hashes besides the selection)."""
        return {
            "layout": self.layout,
            "variable": self.variable,
            "tracer": self.tracer,
            "variables": self.variables if self.layout == "ce" else None,
            "x_first": self.x_first,
        }

    def _read(self, start: int, count: int) -> np.ndarray:
        """Trajectories ``start … start + count − 1`` of the window, ``(count, T, C, H, W)``."""
        with h5py.File(self.path, "r") as file:
            stored = file[self.variable]
            if self.layout == "ns":
                channels = slice(0, 3 if self.tracer else 2)
                data = np.asarray(stored[start : start + count, self.frame_slice, channels])
            else:
                data = np.asarray(stored[start : start + count, self.frame_slice, 0:5])
        data = data.astype(np.float32)
        if self.x_first:
            data = data.swapaxes(-1, -2)
        if self.layout == "ce":
            rho, ux, uy, p, energy = (data[:, :, c] for c in range(5))
            if self.variables == "conserved":
                data = np.stack([rho, rho * ux, rho * uy, energy], axis=2)
            else:
                data = np.stack([rho, ux, uy, p], axis=2)
        return np.ascontiguousarray(data)

    def _check_orientation(self, where: str) -> None:
        with h5py.File(self.path, "r") as file:
            frame = np.asarray(file[self.variable][0, self._frames[0], 0:2], dtype=np.float64)
        stored = torch.from_numpy(frame)
        assumed = stored.transpose(-1, -2) if self.x_first else stored
        other = stored if self.x_first else stored.transpose(-1, -2)
        here, there = relative_divergence(assumed), relative_divergence(other)
        if here > _DIVERGENCE_FREE and there <= _DIVERGENCE_FREE:
            raise ValueError(
                f"{where}: the velocity is divergence-free only if its axes are read the other way "
                f"(relative divergence {here:.2g} with x_first={self.x_first}, {there:.2g} with "
                f"x_first={not self.x_first}); pass x_first={not self.x_first}"
            )
