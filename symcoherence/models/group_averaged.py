r"""Group averaging: an exactly equivariant model built from any backbone.

.. math:: \bar f(x) = \frac{1}{|G|} \sum_{g \in G} g^{-1} \cdot f(g \cdot x).

For any ``h ∈ G``, substituting ``g' = g h`` gives ``f̄(h·x) = h·f̄(x)``: the wrapped model is
equivariant for every backbone ``f`` whenever the group action is a homomorphism (exact for the
permutation actions of :class:`~symcoherence.groups.D4`, :class:`~symcoherence.groups.C4` and
:class:`~symcoherence.groups.Shifts` with a period). The ``|G|`` transformed copies run through the
backbone as one batch of ``|G|·B`` fields.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.models import GroupAveraged
    >>> from symcoherence.testing import assert_equivariant
    >>> conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
    >>> velocity = sc.FieldType(["vector"])
    >>> model = GroupAveraged(conv, sc.groups.D4(), velocity)
    >>> assert_equivariant(model, sc.groups.D4(), velocity, grid=8)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from symcoherence.groups import FieldType, Group, from_spec
from symcoherence.models.base import build_from_spec, module_spec


class GroupAveraged(nn.Module):
    """The group average ``f̄(x) = |G|⁻¹ Σ_g g⁻¹·f(g·x)`` of a backbone ``f`` (module docstring).

    Equivariance:
        Exactly equivariant under every element of ``group`` (up to the round-off of a sum taken
        in a different order), for any backbone, with inputs transforming as ``field_type`` and
        outputs as ``target_field_type``. It inherits the backbone's equivariance under any other
        transformation that commutes with all elements of ``group``.

    Args:
        backbone: any module mapping ``(B, C_in, H, W) -> (B, C_out, H, W)``, or its spec
            ``{"class_path": ..., "init_args": ...}`` (how checkpoints rebuild it).
        group: the symmetry group to average over, or its ``group.spec()`` dict.
        field_type: field type of the input channels (a :class:`FieldType` or a list of kinds).
        target_field_type: field type of the output channels (default ``field_type``).

    Raises:
        TypeError: if ``group`` or a field type has the wrong type.
        ValueError: if the backbone's channel counts (when it declares them) disagree with the
            field types, or, at the first forward, if the input does not match ``field_type``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        group: Group | dict[str, Any],
        field_type: FieldType | list[str],
        target_field_type: FieldType | list[str] | None = None,
    ):
        super().__init__()
        if isinstance(backbone, dict):
            backbone = build_from_spec(backbone)
        if isinstance(group, dict):
            group = from_spec(group)
        if not isinstance(group, Group):
            raise TypeError(
                f"GroupAveraged: group must be a symcoherence Group (e.g. sc.groups.D4()); got "
                f"{type(group).__name__}"
            )
        self.backbone = backbone
        self.group = group
        self.field_type = FieldType.coerce(field_type, "field_type")
        self.target_field_type = (
            self.field_type
            if target_field_type is None
            else FieldType.coerce(target_field_type, "target_field_type")
        )
        self.in_channels = self.field_type.num_channels
        self.out_channels = self.target_field_type.num_channels
        for name, declared, expected in (
            ("in_channels", getattr(backbone, "in_channels", None), self.in_channels),
            ("out_channels", getattr(backbone, "out_channels", None), self.out_channels),
        ):
            if declared is not None and declared != expected:
                raise ValueError(
                    f"GroupAveraged: the backbone has {name}={declared} but the field type has "
                    f"{expected} channels ({self.field_type if name == 'in_channels' else self.target_field_type}); "
                    "build the backbone with matching channel counts"
                )
        self._inverses = [group.inverse(element) for element in group.elements]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)``: the average over the group orbit."""
        self.field_type.check(x, "GroupAveraged input")
        orbit = self.group.orbit(x, self.field_type)
        count, batch = orbit.shape[:2]
        outputs = self.backbone(orbit.reshape(count * batch, *x.shape[1:]))
        outputs = outputs.reshape(count, batch, *outputs.shape[1:])
        pulled_back = [
            self.group.act(inverse, output, self.target_field_type)
            for inverse, output in zip(self._inverses, outputs.unbind(0), strict=True)
        ]
        return torch.stack(pulled_back).mean(dim=0)

    def spec(self) -> dict[str, Any] | None:
        """Rebuild spec (as for the backbones), or ``None`` if the backbone has none."""
        backbone = module_spec(self.backbone)
        if backbone is None:
            return None
        init_args = {
            "backbone": backbone,
            "group": self.group.spec(),
            "field_type": self.field_type.to_list(),
            "target_field_type": self.target_field_type.to_list(),
        }
        return {
            "class_path": f"{type(self).__module__}.{type(self).__name__}",
            "init_args": init_args,
        }
