"""Data: a Navier–Stokes solver, initial conditions, forcings, a trajectory cache and datamodules.

Example:
    >>> from symcoherence.data import cache_key
    >>> len(cache_key({"n": 64}))
    16
"""

from symcoherence.data.cache import (
    CachedTrajectories,
    cache_key,
    cache_path,
    check_cache,
    ensure_cache,
    load_trajectories,
)

__all__ = [
    "CachedTrajectories",
    "cache_key",
    "cache_path",
    "check_cache",
    "ensure_cache",
    "load_trajectories",
]
