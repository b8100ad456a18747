r"""``NavierStokesSource``: a 2-D Navier–Stokes data set as a frozen value (physics, grid, sampling).

Trajectory ``i`` starts from :func:`~symcoherence.data.navier_stokes.initial_vorticity` with seed
``seed · 1_000_003 + i``, is integrated by :class:`~symcoherence.data.navier_stokes.NavierStokes2D`
for ``burn_in``, then ``num_frames`` frames ``frame_interval`` apart are recorded as vorticity
(``FieldType(["pseudoscalar"])``) or velocity ``(u_x, u_y)`` (``FieldType(["vector"])``).

The defaults (64², 32 trajectories of 20 frames) generate in seconds on a CPU. A GPU preset with
more resolution and data::

    NavierStokesSource(n=128, num_trajectories=256, num_frames=40, viscosity=5e-4,
                       solver_dtype="float64")   # generate with device="cuda"

Symmetry: ``symmetry_group`` is every rotation, reflection and integer shift of the grid that fixes
the forcing (``D4 ⋉ Z_n²``, ``8 n²`` elements, unforced); ``diagnostic_group`` is its small subgroup
``D4`` unforced, ``"Kolmogorov"`` or ``"Diagonal"`` when forced (see
:mod:`symcoherence.data.navier_stokes.forcing`).

Example:
    >>> source = NavierStokesSource(n=16, num_trajectories=2, num_frames=3, burn_in=0.0)
    >>> source.shape, source.diagnostic_group.name, source.field_type
    ((2, 3, 1, 16, 16), 'D4', FieldType(['pseudoscalar']))
    >>> source.generate(0, 1).shape
    torch.Size([1, 3, 1, 16, 16])
    >>> source == NavierStokesSource(n=16, num_trajectories=2, num_frames=3, burn_in=0)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from symcoherence.data.navier_stokes.forcing import FORCINGS, Forcing, make_forcing
from symcoherence.data.navier_stokes.initial_conditions import (
    INITIAL_CONDITIONS,
    initial_vorticity,
)
from symcoherence.data.navier_stokes.solver import NavierStokes2D
from symcoherence.data.source import GeneratedSource, as_float, check_integer
from symcoherence.groups import FieldType, LatticeGroup

FIELD_TYPES = {"vorticity": FieldType(["pseudoscalar"]), "velocity": FieldType(["vector"])}
SOLVER_DTYPES = ("float32", "float64")
_PEAK = 3.0  # assumed max(|u_x| + |u_y|) / velocity scale, for choosing and checking dt
_MAX_CFL = 0.8


@dataclass(frozen=True, kw_only=True)
class NavierStokesSource(GeneratedSource):
    """Decaying or forced 2-D turbulence on the periodic unit square (see the module docstring).

    Args:
        n: grid points per side.
        num_trajectories: trajectories to generate.
        num_frames: recorded frames per trajectory.
        frame_interval: time between recorded frames.
        burn_in: time simulated before the first recorded frame.
        viscosity: ``ν``.
        drag: linear drag ``α``.
        forcing: ``None``, ``"kolmogorov"`` (``A sin(2π k y)``) or ``"diagonal"``.
        forcing_amplitude: forcing amplitude ``A`` (``None``: 1 for Kolmogorov, 0.1 for diagonal).
        forcing_wavenumber: Kolmogorov wavenumber ``k``.
        initial_condition: ``"gaussian_random_field"``, ``"vortices"`` or ``"sines"``.
        anisotropy: stretch factor of the initial structures along ``x`` (1 = isotropic); it breaks
            the rotation symmetry of the data distribution, not of the dynamics.
        velocity_rms: RMS velocity of every initial condition.
        dt: solver step (``None``: ``0.4 / (3 n U)`` with ``U`` the larger of ``velocity_rms``
            and the laminar velocity of the forcing).
        fields: ``"vorticity"`` (pseudoscalar) or ``"velocity"`` (vector ``(u_x, u_y)``).
        solver_dtype: ``"float32"`` or ``"float64"`` for the simulation (stored as float32).
        seed: base seed of the initial conditions.

    Raises:
        ValueError: for an unknown forcing, initial condition, fields or dtype, a step whose
            estimated CFL number ``dt · n · 3 U`` exceeds 0.8, a forcing without dissipation, or a
            bad size, when the source is built (before anything is simulated).
    """

    cache_prefix = "navier_stokes"

    n: int = 64
    num_trajectories: int = 32
    num_frames: int = 20
    frame_interval: float = 0.05
    burn_in: float = 0.25
    viscosity: float = 1e-3
    drag: float = 0.0
    forcing: str | None = None
    forcing_amplitude: float | None = None
    forcing_wavenumber: int = 4
    initial_condition: str = "gaussian_random_field"
    anisotropy: float = 1.0
    velocity_rms: float = 1.0
    dt: float | None = None
    fields: str = "vorticity"
    solver_dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        as_float(
            self,
            "frame_interval",
            "burn_in",
            "viscosity",
            "drag",
            "forcing_amplitude",
            "anisotropy",
            "velocity_rms",
            "dt",
        )
        check_integer(name, "n", self.n, 4)
        if self.fields not in FIELD_TYPES:
            raise ValueError(
                f"{name}: fields must be 'vorticity' (pseudoscalar) or 'velocity' (vector), got "
                f"{self.fields!r}"
            )
        if self.forcing is not None and self.forcing not in FORCINGS:
            raise ValueError(
                f"{name}: unknown forcing {self.forcing!r}; choose None or one of {list(FORCINGS)}"
            )
        if self.initial_condition not in INITIAL_CONDITIONS:
            raise ValueError(
                f"{name}: unknown initial_condition {self.initial_condition!r}; choose one of "
                f"{list(INITIAL_CONDITIONS)}"
            )
        if self.solver_dtype not in SOLVER_DTYPES:
            raise ValueError(
                f"{name}: solver_dtype must be 'float32' or 'float64', got {self.solver_dtype!r}"
            )
        if not (
            self.anisotropy >= 1.0
            and self.velocity_rms > 0
            and self.frame_interval > 0
            and self.burn_in >= 0
        ):
            raise ValueError(
                f"{name}: need anisotropy ≥ 1, velocity_rms > 0, frame_interval > 0 and "
                f"burn_in ≥ 0; got {self.anisotropy}, {self.velocity_rms}, "
                f"{self.frame_interval}, {self.burn_in}"
            )
        speed = max(self.velocity_rms, self._laminar_speed())
        estimate = self.time_step * self.n * _PEAK * speed
        if not self.time_step > 0 or estimate > _MAX_CFL:
            raise ValueError(
                f"{name}: dt={self.dt} is unstable: the estimated CFL number dt·n·max(|u_x|+|u_y|) "
                f"≈ {estimate:.3g} exceeds {_MAX_CFL} (velocity scale {speed:.3g}, n={self.n}); "
                f"use dt ≤ {_MAX_CFL / (self.n * _PEAK * speed):.3g} or dt=None"
            )
        _ = self.solver  # builds (and checks) the solver now

    # ------------------------------------------------------------------ physics
    @cached_property
    def forcing_field(self) -> Forcing:
        """The forcing on the grid (all zeros, named ``"Unforced"``, without forcing)."""
        return make_forcing(self.forcing, self.n, self.forcing_amplitude, self.forcing_wavenumber)

    def _laminar_speed(self) -> float:
        """Speed of the steady laminar response ``u ~ A / ((ν K² + α) K)`` to the forcing."""
        amplitude = float(self.forcing_field.field.abs().max())
        if amplitude == 0.0:
            return 0.0
        waves = self.forcing_wavenumber if self.forcing_field.name == "Kolmogorov" else math.sqrt(2)
        wave = 2 * math.pi * waves
        damping = self.viscosity * wave**2 + self.drag
        if damping == 0.0:
            raise ValueError(
                f"{type(self).__name__}: a forced run needs viscosity > 0 or drag > 0 to stay "
                f"bounded; got viscosity={self.viscosity}, drag={self.drag}"
            )
        return amplitude / (damping * wave)

    @property
    def time_step(self) -> float:
        """The solver step: ``dt``, or the automatic ``0.5 · 0.8 / (3 n U)`` when ``dt`` is None."""
        if self.dt is not None:
            return self.dt
        speed = max(self.velocity_rms, self._laminar_speed())
        return 0.5 * _MAX_CFL / (self.n * _PEAK * speed)

    @cached_property
    def solver(self) -> NavierStokes2D:
        """The solver of this configuration (float64 operators, cast to the state's device)."""
        forcing = None if self.forcing is None else self.forcing_field
        return NavierStokes2D(
            self.n, self.viscosity, forcing=forcing, drag=self.drag, dt=self.time_step
        )

    # ------------------------------------------------------------------ what the data declares
    @property
    def field_type(self) -> FieldType:
        """``FieldType(["pseudoscalar"])`` for vorticity, ``FieldType(["vector"])`` for velocity."""
        return FIELD_TYPES[self.fields]

    @property
    def symmetry_group(self) -> LatticeGroup:
        """Every rotation, reflection and integer shift that fixes the forcing."""
        return self.solver.symmetry_group

    @property
    def diagnostic_group(self) -> LatticeGroup:
        """The small subgroup measured by default (``D4`` unforced)."""
        return self.solver.diagnostic_group

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return self.n, self.n

    @property
    def times(self) -> np.ndarray:
        """``burn_in + frame_interval · k`` for ``k = 0 … num_frames − 1``."""
        return self.burn_in + self.frame_interval * np.arange(self.num_frames)

    def provenance(self) -> dict[str, str]:
        """The scheme: ``{"solver": "NavierStokes2D/RK3-CN"}``."""
        return {"solver": "NavierStokes2D/RK3-CN"}

    # ------------------------------------------------------------------ generation
    def generate(
        self, start: int = 0, count: int | None = None, *, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Trajectories ``start … start + count − 1`` as ``(count, T, C, n, n)`` float32 (CPU).

        Args:
            start: index of the first trajectory.
            count: number of trajectories (default: up to ``num_trajectories``).
            device: torch device of the simulation.

        Raises:
            FloatingPointError: if the flow leaves the CFL limit or stops being finite.
        """
        count = self._span(start, count)
        omega0 = initial_vorticity(
            self.initial_condition,
            self.n,
            self.trajectory_seeds(start, count),
            anisotropy=self.anisotropy,
            velocity_rms_target=self.velocity_rms,
        )
        dtype = getattr(torch, self.solver_dtype)
        with torch.no_grad():
            omega = self.solver.rollout(omega0.to(device, dtype), self.times).transpose(0, 1)
            if self.fields == "velocity":
                frames = self.solver.velocity(omega)
            else:
                frames = omega[:, :, None]
        return frames.float().cpu()
