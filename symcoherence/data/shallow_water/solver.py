r"""Rotating shallow water on the sphere: a thin wrapper over torch-harmonics' spectral solver.

The solver (``torch_harmonics.examples.ShallowWaterSolver``) integrates, in spherical-harmonic space,

.. math::
    ∂_t ζ = −∇·\big((ζ + f)\,\mathbf u\big), \quad
    ∂_t δ = \hat k·∇×\big((ζ + f)\,\mathbf u\big) − ∇^2\big(Φ + |\mathbf u|^2/2\big), \quad
    ∂_t Φ = −∇·(Φ\,\mathbf u),

with relative vorticity ``ζ``, divergence ``δ``, geopotential ``Φ = g h``, Coriolis parameter
``f = 2Ω sin φ`` and implicit hyperdiffusion on ``ζ, δ``; third-order Adams–Bashforth in time
(started with forward Euler and AB2). :class:`SphericalShallowWater` adds what a dataset needs:

* **Grid states.** A state is a grid tensor ``(..., 3, nlat, nlon)`` in float64 with fields
  ``"uvh"`` = ``(u, v, h')`` (eastward and northward wind in m/s, height anomaly
  ``h' = h − H̄`` in m) or ``"vdh"`` = ``(ζ, δ, h')`` (s⁻¹, s⁻¹, m). Latitude index 0 is the north
  pole and longitude increases eastward along the last axis (torch-harmonics' layout). Field
  types: ``"uvh"`` is ``FieldType(["vector", "scalar"])`` and ``"vdh"`` is
  ``FieldType(["pseudoscalar", "scalar", "scalar"])``.
* **A Markov frame map.** :meth:`SphericalShallowWater.step` maps a grid state to the grid state
  ``num_steps · dt`` later, restarting the multistep scheme at every call, so the next frame is a
  function of the current frame alone (what a one-step emulator learns).
* **Symmetry.** Every zonal shift and the equatorial mirror, with the sign rules derived in
  :mod:`symcoherence.groups.sphere` (``v`` and ``ζ`` change sign under the mirror):
  :attr:`SphericalShallowWater.symmetry_group` is ``ZonalxEquator`` with all ``2·nlon`` elements,
  and :attr:`SphericalShallowWater.diagnostic_group` its subgroup of up to 8 shifts (every
  ``nlon // gcd(nlon, 8)`` cells), each with and without the mirror (:func:`diagnostic_group`).

:class:`~symcoherence.data.SphericalShallowWaterSource` describes a data set of its trajectories
(cached with :mod:`symcoherence.data.cache`).

``torch_harmonics`` is imported when a solver is built, never at module import.

Example:
    >>> solver = SphericalShallowWater(nlat=16, nlon=32)
    >>> x0 = solver.initial_condition("random", seed=0)
    >>> solver.rollout(x0, num_frames=3, steps_per_frame=2).shape
    torch.Size([3, 3, 16, 32])
    >>> solver.symmetry_group.name, len(solver.symmetry_group), len(solver.diagnostic_group)
    ('ZonalxEquator', 64, 16)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from symcoherence.groups import EquatorialReflection, FieldType, SphereProduct, ZonalShifts

FIELD_TYPES = {
    "uvh": FieldType(["vector", "scalar"]),
    "vdh": FieldType(["pseudoscalar", "scalar", "scalar"]),
}
GRIDS = ("equiangular", "legendre-gauss", "lobatto")
INITIAL_CONDITIONS = ("random", "galewsky")
_MAX_COURANT = 0.5  # AB3 is stable for dt·ω < 0.72 on oscillatory modes; keep a margin


def diagnostic_group(nlon: int, zonal_stride: int | None = None) -> SphereProduct:
    """``ZonalShifts(nlon, stride=zonal_stride) × EquatorialReflection``, named ``"ZonalxEquator"``.

    Args:
        nlon: longitudes of the grid.
        zonal_stride: shift step in cells; must divide ``nlon`` (default ``nlon // gcd(nlon, 8)``:
            up to 8 shifts).

    Raises:
        ValueError: if ``zonal_stride`` does not divide ``nlon``.
    """
    stride = nlon // math.gcd(nlon, 8) if zonal_stride is None else zonal_stride
    return SphereProduct(ZonalShifts(nlon, stride=stride), EquatorialReflection())


def check_fields(fields: str) -> FieldType:
    """The field type of ``fields`` (``"uvh"`` or ``"vdh"``), or a ``ValueError`` naming both."""
    if fields not in FIELD_TYPES:
        raise ValueError(
            f"fields must be 'uvh' (eastward wind, northward wind, height) or 'vdh' (vorticity, "
            f"divergence, height); got {fields!r}"
        )
    return FIELD_TYPES[fields]


def check_grid(nlat: int, nlon: int, grid: str = "equiangular", lmax: int | None = None) -> int:
    """Validate a shallow-water grid and return the spectral truncation ``lmax``.

    ``lmax`` defaults to ``ceil(nlat / 3)`` (products of two resolved fields are then alias-free on
    the grid); every retained degree needs its full set of orders, ``lmax <= nlon // 2 + 1``.

    Raises:
        ValueError: for non-integer or too small sizes, an unknown grid, or too few longitudes.
    """
    for label, value, least in (("nlat", nlat, 4), ("nlon", nlon, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(
                f"{label} must be an integer >= {least}, got {value!r}; the default grid is "
                "nlat=32, nlon=64 (use nlon = 2·nlat)"
            )
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {list(GRIDS)}, got {grid!r}")
    lmax = math.ceil(nlat / 3) if lmax is None else lmax
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 2:
        raise ValueError(f"lmax must be an integer >= 2, got {lmax!r}")
    if lmax > nlon // 2 + 1:
        raise ValueError(
            f"nlon = {nlon} resolves zonal wavenumbers up to {nlon // 2} but lmax = {lmax} needs "
            f"{lmax - 1}; use nlon >= {2 * lmax - 2} (typically nlon = 2·nlat = {2 * nlat})"
        )
    return lmax


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Temporarily use ``count`` intra-op threads (``None``: leave the setting alone)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SphericalShallowWater:
    r"""Grid-state interface to torch-harmonics' rotating shallow-water solver (float64).

    Args:
        nlat: number of latitudes (index 0 at the north pole).
        nlon: number of longitudes (eastward along the last axis).
        dt: solver time step in seconds.
        fields: ``"uvh"`` or ``"vdh"`` (see the module docstring).
        grid: latitude grid, ``"equiangular"`` (poles included), ``"legendre-gauss"`` or
            ``"lobatto"``; all are symmetric about the equator.
        lmax: spectral truncation (default ``ceil(nlat / 3)``).
        device: where the solver runs.
        threads: intra-op CPU threads while stepping (``None`` leaves torch's setting). The
            default 1 is fastest at these sizes: the transforms are too small to profit from
            threads, and on a busy machine thread contention slows them a hundredfold.

    Raises:
        ValueError: for a bad grid (see :func:`check_grid`), unknown ``fields``, or a time step
            beyond the gravity-wave stability limit ``dt · sqrt(g H̄) · lmax / a <= 0.5``.
    """

    def __init__(
        self,
        nlat: int = 32,
        nlon: int = 64,
        dt: float = 600.0,
        *,
        fields: str = "uvh",
        grid: str = "equiangular",
        lmax: int | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
    ):
        lmax = check_grid(nlat, nlon, grid, lmax)
        self.field_type = check_fields(fields)
        if not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        from torch_harmonics.examples import ShallowWaterSolver

        self.solver = ShallowWaterSolver(nlat, nlon, float(dt), lmax=lmax, mmax=lmax, grid=grid)
        self.solver = self.solver.to(device)
        wave_speed = math.sqrt(float(self.solver.gravity) * float(self.solver.havg))
        courant = float(dt) * wave_speed * lmax / float(self.solver.radius)
        if courant > _MAX_COURANT:
            limit = _MAX_COURANT * float(self.solver.radius) / (wave_speed * lmax)
            raise ValueError(
                f"dt = {dt} s is too long for gravity waves at lmax = {lmax} "
                f"(Courant number {courant:.2f} > {_MAX_COURANT}); use dt <= {limit:.0f} s"
            )
        self.nlat, self.nlon, self.lmax, self.dt = nlat, nlon, lmax, float(dt)
        self.fields, self.grid = fields, grid
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads

    @property
    def _mean_geopotential(self) -> float:
        """Spectral coefficient of the constant ``g H̄``: ``Y_0^0 = 1 / sqrt(4π)`` (orthonormal)."""
        return math.sqrt(4 * math.pi) * float(self.solver.gravity) * float(self.solver.havg)

    @property
    def symmetry_group(self) -> SphereProduct:
        """Every zonal shift and the equatorial mirror (``2·nlon`` elements, all exact)."""
        return SphereProduct(ZonalShifts(self.nlon), EquatorialReflection())

    @property
    def diagnostic_group(self) -> SphereProduct:
        """Up to 8 zonal shifts, each with and without the mirror (:func:`diagnostic_group`)."""
        return diagnostic_group(self.nlon)

    # ------------------------------------------------------------------ conversions
    def to_grid(self, spec: torch.Tensor) -> torch.Tensor:
        """Spectral state ``(Φ, ζ, δ)`` ``(3, lmax, lmax)`` → grid state ``(3, nlat, nlon)``."""
        s = self.solver
        anomaly = spec[0].clone()
        anomaly[0, 0] = anomaly[0, 0] - self._mean_geopotential
        height = (s.spec2grid(anomaly) / s.gravity)[None]
        if self.fields == "uvh":
            return torch.cat([s.getuv(spec[1:]), height])
        return torch.cat([s.spec2grid(spec[1:]), height])

    def from_grid(self, state: torch.Tensor) -> torch.Tensor:
        """Grid state ``(3, nlat, nlon)`` → spectral state ``(Φ, ζ, δ)`` ``(3, lmax, lmax)``.

        Exact inverse of :meth:`to_grid` on band-limited states (those :meth:`to_grid` returns).
        The mean depth ``H̄`` enters the ``(0, 0)`` coefficient analytically, so the height anomaly
        keeps its full float64 precision.
        """
        s = self.solver
        geopotential = s.grid2spec(s.gravity * state[2])
        geopotential[0, 0] = geopotential[0, 0] + self._mean_geopotential
        geopotential = geopotential[None]
        if self.fields == "uvh":
            return torch.cat([geopotential, s.vrtdivspec(state[:2])])
        return torch.cat([geopotential, s.grid2spec(state[:2])])

    def _check_state(self, state: torch.Tensor) -> torch.Tensor:
        self.field_type.check(state, "state")
        if tuple(state.shape[-2:]) != (self.nlat, self.nlon):
            raise ValueError(
                f"the solver's grid is nlat×nlon = {self.nlat}×{self.nlon} but the state has shape "
                f"{tuple(state.shape)}"
            )
        return state.to(device=self.solver.lap.device, dtype=torch.float64)

    # ------------------------------------------------------------------ dynamics
    def initial_condition(
        self, kind: str = "random", seed: int = 0, mach: float = 0.2, perturbation: float = 0.01
    ) -> torch.Tensor:
        """A band-limited initial grid state ``(3, nlat, nlon)``.

        ``"random"``: torch-harmonics' random spectral state (white spectrum, height amplitude
        ``hamp = 120 m``, winds scaled by ``mach``). ``"galewsky"``: the barotropically unstable jet
        of Galewsky et al. (2004) plus ``perturbation`` times a random state without its mean, so
        different seeds give different trajectories (``perturbation=0`` is the classic case).
        Random draws come from ``seed`` and leave the global RNG untouched.

        Raises:
            ValueError: for an unknown ``kind``.
        """
        if kind not in INITIAL_CONDITIONS:
            raise ValueError(f"kind must be one of {list(INITIAL_CONDITIONS)}, got {kind!r}")
        devices = [self.solver.lap.device] if self.solver.lap.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            noise = self.solver.random_initial_condition(mach=mach)
        if kind == "galewsky":
            noise[0, 0, 0] = 0.0
            with warnings.catch_warnings():  # torch-harmonics calls meshgrid without indexing=
                warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)
                jet = self.solver.galewsky_initial_condition()
            spec = jet + perturbation * noise
        else:
            spec = noise
        return self.to_grid(spec)

    def step(self, state: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
        """Advance grid states ``(..., 3, nlat, nlon)`` by ``num_steps · dt`` seconds (float64).

        The multistep scheme restarts at every call, so the result depends on ``state`` alone.
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        state = self._check_state(state)
        flat = state.reshape(-1, *state.shape[-3:])
        with _threads(self.threads):
            out = [self.to_grid(self.solver.timestep(self.from_grid(x), num_steps)) for x in flat]
        return torch.stack(out).reshape(state.shape)

    def rollout(self, state: torch.Tensor, num_frames: int, steps_per_frame: int) -> torch.Tensor:
        """Frames ``x_0 = state, x_{t+1} = step(x_t, steps_per_frame)`` → ``(num_frames, ...)``.

        Args:
            state: initial grid states ``(..., 3, nlat, nlon)``.
            num_frames: number of frames returned, the initial state included.
            steps_per_frame: solver steps between frames (frame interval ``steps_per_frame·dt``).
        """
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        frames = [self._check_state(state)]
        for _ in range(num_frames - 1):
            frames.append(self.step(frames[-1], steps_per_frame))
        return torch.stack(frames)
