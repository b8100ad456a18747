"""Data: sources of trajectories, one datamodule pipeline, the trajectory cache, the solvers.

* **Sources** (frozen values that say what the data is and which groups act on it):
  :class:`NavierStokesSource`, :class:`SphericalShallowWaterSource` (simulated, cached under a key
  derived from their fields), :class:`HDF5Source` (a file), :class:`ArraySource` (memory),
  :class:`TheWellSource` (one of The Well's HDF5 files) and :class:`PDEGymSource` (PDEGym's
  NetCDF4 files), which convert a window of the file and cache it.
* **Pipeline**: :class:`TrajectoryDataModule` ``(source, *, history, batch_size, ...)`` serves
  one-step pairs; :class:`NavierStokesDataModule`, :class:`SphericalShallowWaterDataModule` and
  :class:`HDF5TrajectoryDataModule` build the source and the pipeline from one set of keywords.
* **Solvers**: :class:`NavierStokes2D` (with :func:`make_forcing`, :func:`initial_vorticity`) and
  :class:`SphericalShallowWater`.

Every source declares ``field_type`` (of one frame), ``symmetry_group`` (the full admissible group)
and ``diagnostic_group`` (the small subgroup that diagnostics measure by default).

Example:
    >>> from symcoherence.data import NavierStokes2D
    >>> solver = NavierStokes2D(32, viscosity=1e-3)
    >>> solver.diagnostic_group.name, solver.symmetry_group.name
    ('D4', 'D4xShifts')
"""

from symcoherence.data.cache import (
    CACHE_FORMAT,
    CachedTrajectories,
    cache_key,
    cache_path,
    check_cache,
    ensure_cache,
    load_trajectories,
)
from symcoherence.data.datamodule import TrajectoryDataModule
from symcoherence.data.file_source import ConvertedFileSource
from symcoherence.data.hdf5 import HDF5Source
from symcoherence.data.navier_stokes import (
    FORCINGS,
    INITIAL_CONDITIONS,
    Forcing,
    NavierStokes2D,
    NavierStokesSource,
    initial_vorticity,
    make_forcing,
    orbit_group,
    stabilizer,
)
from symcoherence.data.pdegym import PDEGymSource
from symcoherence.data.presets import (
    HDF5TrajectoryDataModule,
    NavierStokesDataModule,
    SphericalShallowWaterDataModule,
)
from symcoherence.data.shallow_water import SphericalShallowWater, SphericalShallowWaterSource
from symcoherence.data.source import ArraySource, GeneratedSource, TrajectorySource
from symcoherence.data.the_well import TheWellSource

__all__ = [
    "CACHE_FORMAT",
    "FORCINGS",
    "INITIAL_CONDITIONS",
    "ArraySource",
    "CachedTrajectories",
    "ConvertedFileSource",
    "Forcing",
    "GeneratedSource",
    "HDF5Source",
    "HDF5TrajectoryDataModule",
    "NavierStokes2D",
    "NavierStokesDataModule",
    "NavierStokesSource",
    "PDEGymSource",
    "SphericalShallowWater",
    "SphericalShallowWaterDataModule",
    "SphericalShallowWaterSource",
    "TheWellSource",
    "TrajectoryDataModule",
    "TrajectorySource",
    "cache_key",
    "cache_path",
    "check_cache",
    "ensure_cache",
    "initial_vorticity",
    "load_trajectories",
    "make_forcing",
    "orbit_group",
    "stabilizer",
]
