"""Reference implementations and assertions for users' own models and for the test-suite.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.testing import assert_equivariant
    >>> pointwise = torch.nn.Conv2d(1, 1, kernel_size=1)   # a 1×1 conv commutes with D4 on scalars
    >>> assert_equivariant(pointwise, sc.groups.D4(), sc.FieldType(["scalar"]), grid=8)
"""

from symcoherence.testing.equivariance import assert_equivariant, equivariance_defect
from symcoherence.testing.reference import reference_grads, reference_orbit_influence
from symcoherence.testing.tolerances import TOLERANCES, tolerance_for

__all__ = [
    "TOLERANCES",
    "assert_equivariant",
    "equivariance_defect",
    "reference_grads",
    "reference_orbit_influence",
    "tolerance_for",
]
