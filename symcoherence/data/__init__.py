"""Data: a Navier–Stokes solver, initial conditions, forcings, a trajectory cache and datamodules.

Example:
    >>> from symcoherence.data import NavierStokes2D
    >>> NavierStokes2D(32, viscosity=1e-3).symmetry_group.name
    'D4'
"""

from symcoherence.data.cache import (
    CachedTrajectories,
    cache_key,
    cache_path,
    check_cache,
    ensure_cache,
    load_trajectories,
)
from symcoherence.data.forcing import FORCINGS, Forcing, make_forcing, orbit_group, stabilizer
from symcoherence.data.generate import generate
from symcoherence.data.hdf5_datamodule import HDF5TrajectoryDataModule
from symcoherence.data.initial_conditions import INITIAL_CONDITIONS, initial_vorticity
from symcoherence.data.navier_stokes import NavierStokes2D
from symcoherence.data.navier_stokes_datamodule import NavierStokesDataModule
from symcoherence.data.shallow_water_datamodule import SphericalShallowWaterDataModule
from symcoherence.data.trajectories import TrajectoryDataModule

__all__ = [
    "FORCINGS",
    "INITIAL_CONDITIONS",
    "CachedTrajectories",
    "Forcing",
    "HDF5TrajectoryDataModule",
    "NavierStokes2D",
    "NavierStokesDataModule",
    "SphericalShallowWaterDataModule",
    "TrajectoryDataModule",
    "cache_key",
    "cache_path",
    "check_cache",
    "ensure_cache",
    "generate",
    "initial_vorticity",
    "load_trajectories",
    "make_forcing",
    "orbit_group",
    "stabilizer",
]
