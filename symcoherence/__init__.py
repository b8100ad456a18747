"""symcoherence: is training a neural PDE emulator learning the symmetries of the physics?

The package measures *orbit influence* — the metric-weighted overlap
``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m`` between the loss gradient at a state ``x_m`` and at the
symmetry-transformed states ``g·x_n`` — and logs it during training with a Lightning callback.

Public names are imported lazily, so ``import symcoherence`` stays light: Lightning,
torch-harmonics and matplotlib load only when a name that needs them is used.

Example:
    >>> import symcoherence as sc
    >>> sc.groups.D4().elements
    ('e', 'r', 'r2', 'r3', 's', 'sr', 'sr2', 'sr3')
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:  # written once, in pyproject.toml; an install records it in the package metadata
    __version__ = importlib.metadata.version("symcoherence")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

_SUBMODULES = ("groups", "coherence", "data", "models", "testing", "callbacks", "cli")
_LAZY_NAMES = {
    "FieldType": "symcoherence.groups",
    "Group": "symcoherence.groups",
    "smse": "symcoherence.coherence",
    "per_sample_grads": "symcoherence.coherence",
    "orbit_influence": "symcoherence.coherence",
    "OrbitInfluence": "symcoherence.coherence",
    "equivariance_error": "symcoherence.coherence",
    "rollout_equivariance_error": "symcoherence.coherence",
    "OrbitCoherenceMonitor": "symcoherence.callbacks",
}

__all__ = ["__version__", *_SUBMODULES, *_LAZY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"symcoherence.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'symcoherence' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
