"""What FSDP2 (``torch.distributed.fsdp.fully_shard``) changes about a module, as the engines see it.

* every parameter becomes a ``DTensor`` sharded along its first dimension over the data-parallel
  ranks (``shape`` stays the global one; :func:`full_value` gathers the value);
* the module's class becomes a dynamic subclass ``FSDP<Name>(FSDPModule, <Name>)``
  (:func:`plain_class` finds ``<Name>`` again, so the layer rules know it);
* its forward all-gathers the unit's parameters and frees them after, so a sharded model is
  called as training calls it, on every rank at once.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 3)
    >>> is_sharded(net), plain_class(net) is torch.nn.Linear
    (False, True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (without importing ``torch.distributed.tensor``)."""
    return type(tensor).__name__ == "DTensor" and hasattr(tensor, "full_tensor")


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a ``DTensor`` (FSDP2 or another DTensor sharding)."""
    return any(is_dtensor(p) for p in module.parameters())


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a (possibly sharded) tensor, detached (a plain tensor is not copied).

    A collective for a ``DTensor``: every rank must call it, in the same order.
    """
    tensor = tensor.detach()
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def fsdp_module_type() -> type | None:
    """``torch.distributed.fsdp.FSDPModule``, or ``None`` for a torch without FSDP2."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return None
    return FSDPModule


def plain_class(module: nn.Module) -> type:
    """The module's own class: FSDP2 swaps in a subclass ``FSDP<Name>(FSDPModule, <Name>)``."""
    cls, fsdp = type(module), fsdp_module_type()
    if fsdp is not None and issubclass(cls, fsdp):
        return next(c for c in cls.__mro__[1:] if not issubclass(c, fsdp))
    return cls


def check_fsdp_units(model: nn.Module) -> None:
    """Refuse sharded parameters that no FSDP unit inside ``model`` gathers for its forward.

    A model whose root was sharded by ``fully_shard(pl_module)`` but is measured through a child
    (``pl_module.backbone``) would otherwise meet ``DTensor`` weights in its layers.

    Raises:
        ValueError: naming the parameters.
    """
    fsdp = fsdp_module_type()
    units = [] if fsdp is None else [m for m in model.modules() if isinstance(m, fsdp)]
    gathered = {id(p) for unit in units for p in unit.parameters()}
    loose = [n for n, p in model.named_parameters() if is_dtensor(p) and id(p) not in gathered]
    if loose:
        raise ValueError(
            f"the sharded parameters {loose[:5]}{' …' if len(loose) > 5 else ''} belong to no "
            "FSDP unit inside the measured module, so calling it would meet DTensor weights; "
            "apply fully_shard to the measured module (e.g. pl_module.backbone) or to its layers "
            "in configure_model"
        )


__all__ = [
    "check_fsdp_units",
    "fsdp_module_type",
    "full_value",
    "is_dtensor",
    "is_sharded",
    "plain_class",
]
