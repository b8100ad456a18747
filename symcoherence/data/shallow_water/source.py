"""``SphericalShallowWaterSource``: a rotating shallow-water data set as a frozen value.

Trajectory ``i`` starts from
:meth:`~symcoherence.data.shallow_water.SphericalShallowWater.initial_condition` with seed
``seed · 1_000_003 + i``, runs ``burn_in`` frame intervals, then records ``num_frames`` frames
``steps_per_frame · dt`` seconds apart, as ``"uvh"`` (wind vector and height,
``FieldType(["vector", "scalar"])``) or ``"vdh"`` (vorticity, divergence, height,
``FieldType(["pseudoscalar", "scalar", "scalar"])``).

The defaults (32×64 grid, 32 trajectories of 12 hourly frames) generate in a few seconds on one CPU
core. A larger preset (a GPU helps; the step limit halves with each doubling of the grid)::

    SphericalShallowWaterSource(nlat=64, nlon=128, dt=300.0, steps_per_frame=12,
                                num_trajectories=256, num_frames=24)   # generate with device="cuda"

Symmetry: ``symmetry_group`` is everything the solver commutes with (all ``nlon`` zonal shifts and
the equatorial mirror, ``2·nlon`` elements); ``diagnostic_group`` is its subgroup
``ZonalShifts(nlon, stride=zonal_stride) × EquatorialReflection``. Both are named
``"ZonalxEquator"``.

``torch_harmonics`` is imported when a source is built (to check the time step), never at module
import.

Example:
    >>> source = SphericalShallowWaterSource(nlat=16, nlon=32, fields="vdh")
    >>> len(source.symmetry_group), len(source.diagnostic_group), source.field_type
    (64, 16, FieldType(['pseudoscalar', 'scalar', 'scalar']))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from symcoherence.data.shallow_water.solver import (
    INITIAL_CONDITIONS,
    SphericalShallowWater,
    diagnostic_group,
)
from symcoherence.data.source import GeneratedSource, as_float, check_integer
from symcoherence.groups import FieldType, SphereProduct


@dataclass(frozen=True, kw_only=True)
class SphericalShallowWaterSource(GeneratedSource):
    """Shallow-water trajectories on the rotating sphere (see the module docstring).

    Args:
        nlat: latitudes (index 0 at the north pole).
        nlon: longitudes (eastward along the last axis).
        grid: ``"equiangular"``, ``"legendre-gauss"`` or ``"lobatto"``.
        lmax: spectral truncation (default ``ceil(nlat / 3)``).
        dt: solver step in seconds.
        steps_per_frame: solver steps between recorded frames.
        num_trajectories: trajectories to generate.
        num_frames: recorded frames per trajectory.
        burn_in: frame intervals simulated before the first recorded frame.
        initial_condition: ``"random"`` or ``"galewsky"`` (see
            :meth:`~symcoherence.data.shallow_water.SphericalShallowWater.initial_condition`).
        mach: wind scale of the random initial condition.
        perturbation: random perturbation of the Galewsky jet.
        fields: ``"uvh"`` (vector + scalar) or ``"vdh"`` (pseudoscalar + two scalars).
        zonal_stride: shift step of the diagnostic group (default ``nlon // gcd(nlon, 8)``: up to 8
            shifts); must divide ``nlon``. It does not change the data and is not in the cache key.
        seed: base seed of the initial conditions.

    Raises:
        ValueError: for a bad grid, time step, field set, initial condition, stride or size, when
            the source is built (before anything is simulated).
    """

    cache_prefix = "shallow_water"

    nlat: int = 32
    nlon: int = 64
    grid: str = "equiangular"
    lmax: int | None = None
    dt: float = 600.0
    steps_per_frame: int = 6
    num_trajectories: int = 32
    num_frames: int = 12
    burn_in: int = 0
    initial_condition: str = "random"
    mach: float = 0.2
    perturbation: float = 0.01
    fields: str = "uvh"
    zonal_stride: int | None = field(default=None, metadata={"cache_key": False})
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        as_float(self, "dt", "mach", "perturbation")
        if self.initial_condition not in INITIAL_CONDITIONS:
            raise ValueError(
                f"{name}: initial_condition must be one of {list(INITIAL_CONDITIONS)}, got "
                f"{self.initial_condition!r}"
            )
        check_integer(name, "steps_per_frame", self.steps_per_frame, 1)
        check_integer(name, "burn_in", self.burn_in, 0)
        _ = self.solver, self.diagnostic_group  # builds (and checks) the solver and the stride

    @cached_property
    def solver(self) -> SphericalShallowWater:
        """The solver of this configuration on the CPU."""
        return self._solver("cpu")

    def _solver(self, device: str | torch.device) -> SphericalShallowWater:
        return SphericalShallowWater(
            self.nlat,
            self.nlon,
            self.dt,
            fields=self.fields,
            grid=self.grid,
            lmax=self.lmax,
            device=device,
        )

    # ------------------------------------------------------------------ what the data declares
    @property
    def field_type(self) -> FieldType:
        """``FieldType(["vector", "scalar"])`` for ``"uvh"``, pseudoscalar + 2 scalars for ``"vdh"``."""
        return self.solver.field_type

    @property
    def symmetry_group(self) -> SphereProduct:
        """Every zonal shift and the equatorial mirror (``2·nlon`` elements)."""
        return self.solver.symmetry_group

    @cached_property
    def diagnostic_group(self) -> SphereProduct:
        """Shifts by multiples of ``zonal_stride``, each with and without the mirror."""
        return diagnostic_group(self.nlon, self.zonal_stride)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``."""
        return self.nlat, self.nlon

    @property
    def times(self) -> np.ndarray:
        """``(num_frames,)`` recorded times in seconds."""
        interval = self.dt * self.steps_per_frame
        return interval * (self.burn_in + np.arange(self.num_frames))

    def provenance(self) -> dict[str, Any]:
        """The scheme and the torch-harmonics version (its solver generates the data)."""
        from torch_harmonics import __version__

        return {
            "solver": "torch_harmonics.examples.ShallowWaterSolver/AB3",
            "torch_harmonics": __version__,
        }

    # ------------------------------------------------------------------ generation
    def generate(
        self, start: int = 0, count: int | None = None, *, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Trajectories ``start … start + count − 1`` as ``(count, T, 3, nlat, nlon)`` float32 (CPU).

        Args:
            start: index of the first trajectory.
            count: number of trajectories (default: up to ``num_trajectories``).
            device: torch device of the simulation.
        """
        count = self._span(start, count)
        solver = self.solver if torch.device(device).type == "cpu" else self._solver(device)
        states = torch.stack(
            [
                solver.initial_condition(
                    self.initial_condition,
                    seed=seed,
                    mach=self.mach,
                    perturbation=self.perturbation,
                )
                for seed in self.trajectory_seeds(start, count)
            ]
        )
        with torch.no_grad():
            if self.burn_in:
                states = solver.step(states, self.burn_in * self.steps_per_frame)
            frames = solver.rollout(states, self.num_frames, self.steps_per_frame)
        return frames.transpose(0, 1).float().cpu()
