"""The tolerance table: how closely two computations of the same number must agree.

One row per kind of comparison; code and tests use a row by name (``torch.testing.assert_close(a,
b, **TOLERANCES["fp64"])``) and never a literal, so loosening a comparison is a visible, commented
change:

* ``exact``: permutations with signs (group actions, integer rolls) must match bit for bit;
* ``fp64``: float64 computations that differ only in the order of floating-point operations;
* ``fp32``: float32 computations that differ only in the order of floating-point operations.

Example:
    >>> import torch
    >>> from symcoherence.testing import tolerance_for
    >>> tolerance_for(torch.float64)["rtol"]
    1e-10
"""

from __future__ import annotations

import torch

TOLERANCES: dict[str, dict[str, float]] = {
    "exact": {"rtol": 0.0, "atol": 0.0},
    "fp64": {"rtol": 1e-10, "atol": 1e-12},
    "fp32": {"rtol": 1e-5, "atol": 1e-6},
}


def tolerance_for(dtype: torch.dtype) -> dict[str, float]:
    """The floating-point row matching ``dtype`` (``fp64`` for float64, else ``fp32``)."""
    return TOLERANCES["fp64"] if dtype == torch.float64 else TOLERANCES["fp32"]


__all__ = ["TOLERANCES", "tolerance_for"]
