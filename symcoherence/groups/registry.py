"""Rebuild a group from its :meth:`~symcoherence.groups.Group.spec` (HDF5 caches, checkpoints).

Example:
    >>> from symcoherence.groups import D4, from_spec
    >>> from_spec(D4().spec()).compose("r", "s")
    'sr3'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from symcoherence.groups.base import Group, Subgroup
from symcoherence.groups.planar import Affine, LatticeGroup

_BUILDERS: dict[str, Callable[[dict[str, Any]], Group]] = {}


def register_group_type(type_name: str, builder: Callable[[dict[str, Any]], Group]) -> None:
    """Teach :func:`from_spec` to rebuild specs whose ``"type"`` is ``type_name``."""
    _BUILDERS[type_name] = builder


def from_spec(spec: dict[str, Any]) -> Group:
    """Inverse of ``group.spec()``.

    Raises:
        ValueError: if the spec's ``"type"`` is unknown.
    """
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in _BUILDERS:
        raise ValueError(f"unknown group spec type {kind!r}; known types: {sorted(_BUILDERS)}")
    return _BUILDERS[kind](spec)


def _lattice(spec: dict[str, Any]) -> Group:
    table = {
        name: Affine(
            tuple(tuple(int(v) for v in row) for row in entry["matrix"]),  # type: ignore[arg-type]
            tuple(float(v) for v in entry["shift"]),  # type: ignore[arg-type]
        )
        for name, entry in spec["table"].items()
    }
    return LatticeGroup(spec["name"], table, period=spec.get("period"), subpixel=spec["subpixel"])


register_group_type("LatticeGroup", _lattice)
register_group_type(
    "Subgroup", lambda spec: Subgroup(from_spec(spec["parent"]), spec["elements"], spec["name"])
)
