"""Rotating shallow water on the sphere: the torch-harmonics solver wrapper and its data source.

* :class:`SphericalShallowWater`: grid states, a Markov frame map, the symmetry groups.
* :class:`SphericalShallowWaterSource`: a data set of trajectories as a frozen configuration.

``torch_harmonics`` is imported when a solver is built, never at import.

Example:
    >>> diagnostic_group(64).elements[:4]
    ('e', 'z8', 'z16', 'z24')
"""

from symcoherence.data.shallow_water.solver import (
    FIELD_TYPES,
    GRIDS,
    INITIAL_CONDITIONS,
    SphericalShallowWater,
    check_fields,
    check_grid,
    diagnostic_group,
)
from symcoherence.data.shallow_water.source import SphericalShallowWaterSource

__all__ = [
    "FIELD_TYPES",
    "GRIDS",
    "INITIAL_CONDITIONS",
    "SphericalShallowWater",
    "SphericalShallowWaterSource",
    "check_fields",
    "check_grid",
    "diagnostic_group",
]
