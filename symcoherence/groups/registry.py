"""Rebuild a group from its :meth:`~symcoherence.groups.Group.spec` (HDF5 caches, checkpoints).

Example:
    >>> from symcoherence.groups import D4, from_spec
    >>> type(from_spec(D4().spec())).__name__, from_spec(D4().spec()).compose("r", "s")
    ('D4', 'sr3')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from symcoherence.groups.affine import Affine
from symcoherence.groups.base import Group, Subgroup
from symcoherence.groups.planar import C4, D4, FourierShifts, LatticeGroup, Product, Shifts

_BUILDERS: dict[str, Callable[[dict[str, Any]], Group]] = {}


def register_group_type(type_name: str, builder: Callable[[dict[str, Any]], Group]) -> None:
    """Teach :func:`from_spec` to rebuild specs whose ``"type"`` is ``type_name``."""
    _BUILDERS[type_name] = builder


def register_group_class(cls: type[Group]) -> None:
    """Teach :func:`from_spec` to rebuild ``cls`` from the constructor arguments it recorded.

    Arguments that are group specs (dicts with a ``"type"``) are rebuilt first.
    """

    def build(spec: dict[str, Any]) -> Group:
        arguments = {
            key: from_spec(value) if isinstance(value, dict) and "type" in value else value
            for key, value in spec.get("arguments", {}).items()
        }
        return cls(**arguments)

    register_group_type(cls.__name__, build)


def from_spec(spec: dict[str, Any]) -> Group:
    """Inverse of ``group.spec()``.

    Raises:
        ValueError: if the spec's ``"type"`` is unknown.
    """
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in _BUILDERS:
        raise ValueError(f"unknown group spec type {kind!r}; known types: {sorted(_BUILDERS)}")
    return _BUILDERS[kind](spec)


def resolve_group(group: Group | str | dict | None, default: Group | None = None) -> Group | None:
    """A group from a :class:`Group`, a name, a spec dict or its JSON, as configs write them.

    Names are the no-argument groups (``"D4"``, ``"C4"``, in any case) and ``"default"``, which
    returns ``default`` (e.g. the dataset's diagnostic group). ``None`` stays ``None``.

    Raises:
        TypeError: for a value of another type.
        ValueError: for an unknown name or spec.

    Example:
        >>> resolve_group("c4").elements
        ('e', 'r', 'r2', 'r3')
    """
    if group is None or isinstance(group, Group):
        return group
    if isinstance(group, dict):
        return from_spec(group)
    if not isinstance(group, str):
        raise TypeError(
            f"group must be a Group (e.g. symcoherence.groups.D4()), a name such as 'D4', a spec "
            f"dict or its JSON; got {type(group).__name__}"
        )
    if group == "default":
        return default
    if group.lstrip().startswith("{"):
        return from_spec(json.loads(group))
    named = {"d4": D4, "c4": C4}
    if group.strip().lower() not in named:
        raise ValueError(
            f"unknown group {group!r}; names resolved here are 'D4', 'C4' (any case) and "
            "'default' (the data's diagnostic group); for other groups pass the object, e.g. "
            "symcoherence.groups.Shifts(box=1, period=64), or the JSON of group.spec()"
        )
    return named[group.strip().lower()]()


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
for _named in (C4, D4, Shifts, FourierShifts, Product):
    register_group_class(_named)
register_group_type(
    "Subgroup", lambda spec: Subgroup(from_spec(spec["parent"]), spec["elements"], spec["name"])
)
