"""Field types and exact or approximate symmetry-group actions on gridded fields (torch only).

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> omega = torch.randn(1, 32, 32)                 # vorticity: a pseudoscalar
    >>> orbit = sc.groups.D4().orbit(omega, sc.FieldType(["pseudoscalar"]))
    >>> orbit.shape
    torch.Size([8, 1, 32, 32])
"""

from symcoherence.groups.affine import Affine
from symcoherence.groups.base import Group, Subgroup
from symcoherence.groups.field_types import KINDS, FieldType
from symcoherence.groups.planar import (
    C4,
    D4,
    FourierShifts,
    LatticeGroup,
    Product,
    Shifts,
)
from symcoherence.groups.registry import (
    from_spec,
    register_group_class,
    register_group_type,
    resolve_group,
)
from symcoherence.groups.sphere import (
    EquatorialReflection,
    SphereElement,
    SphereGroup,
    SphereProduct,
    ZonalShifts,
)

__all__ = [
    "KINDS",
    "C4",
    "D4",
    "Affine",
    "EquatorialReflection",
    "FieldType",
    "FourierShifts",
    "Group",
    "LatticeGroup",
    "Product",
    "Shifts",
    "SphereElement",
    "SphereGroup",
    "SphereProduct",
    "Subgroup",
    "ZonalShifts",
    "from_spec",
    "register_group_class",
    "register_group_type",
    "resolve_group",
]
