"""2-D incompressible Navier–Stokes on the periodic unit square: solver, forcings, data source.

* :class:`NavierStokes2D`: the pseudo-spectral solver (vorticity form, RK3/Crank–Nicolson).
* :func:`make_forcing`, :func:`stabilizer`, :func:`orbit_group`: forcings and the groups they admit.
* :func:`initial_vorticity`: seeded random initial conditions.
* :class:`NavierStokesSource`: a data set of trajectories as a frozen, hashable configuration.

Example:
    >>> NavierStokesSource(n=16, forcing="kolmogorov", forcing_wavenumber=1).diagnostic_group.name
    'Kolmogorov'
"""

from symcoherence.data.navier_stokes.forcing import (
    FORCINGS,
    Forcing,
    make_forcing,
    orbit_group,
    stabilizer,
)
from symcoherence.data.navier_stokes.initial_conditions import (
    INITIAL_CONDITIONS,
    initial_vorticity,
    velocity_rms,
)
from symcoherence.data.navier_stokes.solver import NavierStokes2D
from symcoherence.data.navier_stokes.source import FIELD_TYPES, NavierStokesSource

__all__ = [
    "FIELD_TYPES",
    "FORCINGS",
    "INITIAL_CONDITIONS",
    "Forcing",
    "NavierStokes2D",
    "NavierStokesSource",
    "initial_vorticity",
    "make_forcing",
    "orbit_group",
    "stabilizer",
    "velocity_rms",
]
