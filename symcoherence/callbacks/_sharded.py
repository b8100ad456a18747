r"""Measuring a model sharded with FSDP2 (``fully_shard``, through ``ModelParallelStrategy``).

Under FSDP2 every parameter is a ``DTensor`` sharded along its first dimension over the
data-parallel ranks, and ``torch.func`` cannot run on such modules. Two ways to measure it:

* **with a projection** (``projection=``): the sharded model itself, by the layer hooks on its
  sharded layers, each layer's per-sample gradient projected as soon as the backward completes
  it (:mod:`~symcoherence.coherence.gradients.sharded`). No rank gathers the model (FSDP gathers
  one unit at a time, as in training), so models too large to gather are measured; every rank
  runs the whole measurement (the passes are collective), and only layers the hooks cover can
  be measured (the others are named in the refusal).
* **without one**: every rank gathers the measured model into a plain **replica**: the same
  module classes (FSDP's dynamic subclasses undone), every parameter and buffer as its full
  tensor (``DTensor.full_tensor()``, called on every rank in the same order, so the gathers pair
  up), and no hooks. The replica is measured exactly as an unsharded model, by the same engines
  (layer hooks, ``vmap``, loop). The Adam metric reads the optimizer's gathered second moments
  through :class:`GatheredOptimizer`, keyed by the replica's parameters. The replica holds the
  full model (and, for ``metric="adam"``, its second moments) on every rank for the firing and
  is dropped after it.

Either way a sharded run logs the numbers a single process would.

Only data-parallel sharding is measured: a ``DTensor`` on a mesh of more than one dimension
(tensor parallelism), or placed other than ``Shard``/``Replicate``, is refused.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh())
    >>> replica = plain_replica(net)
    >>> replica is not net and torch.equal(replica[0].weight, net[0].weight)
    True
    >>> is_sharded(net)
    False
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from symcoherence.coherence.gradients.fsdp import full_value, is_dtensor, is_sharded, plain_class

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def check_data_parallel(module: nn.Module) -> None:
    """Refuse ``DTensor`` parameters that are not data-parallel shards (tensor parallelism).

    Raises:
        ValueError: naming the first such parameter and its placements.
    """
    from torch.distributed.tensor import Replicate, Shard

    for name, param in module.named_parameters():
        if not is_dtensor(param):
            continue
        mesh, placements = param.device_mesh, param.placements
        if mesh.ndim != 1 or not all(isinstance(p, Shard | Replicate) for p in placements):
            raise ValueError(
                f"parameter {name!r} is a DTensor on a {mesh.ndim}-dimensional mesh with "
                f"placements {placements}: OrbitCoherenceMonitor measures data-parallel sharding "
                "(ModelParallelStrategy with tensor_parallel_size=1, fully_shard) and DDP, not "
                "tensor parallelism"
            )


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a (possibly sharded) tensor as the replica's own copy."""
    return full_value(tensor) if is_dtensor(tensor) else tensor.detach().clone()


def plain_replica(module: nn.Module) -> nn.Module:
    """A plain copy of ``module``: its own classes, full parameters and buffers, no hooks.

    Every rank must call it at the same point (each sharded tensor is all-gathered). Attributes
    other than parameters, buffers and submodules are shared with ``module`` (a shallow copy).
    """
    replica = plain_class(module).__new__(plain_class(module))
    replica.__dict__ = dict(module.__dict__)
    replica._parameters = {
        name: None if p is None else nn.Parameter(_full(p), requires_grad=p.requires_grad)
        for name, p in module._parameters.items()
    }
    replica._buffers = {
        name: None if b is None else _full(b) for name, b in module._buffers.items()
    }
    replica._modules = {
        name: None if child is None else plain_replica(child)
        for name, child in module._modules.items()
    }
    for hooks in _HOOK_DICTS:
        if hooks in replica.__dict__:
            replica.__dict__[hooks] = OrderedDict()
    return replica


class GatheredOptimizer:
    """The optimizer's Adam state, gathered and keyed by a replica's parameters.

    Offers what :class:`~symcoherence.coherence.Adam` reads: ``param_groups`` (each with its
    ``betas``, ``eps``, ``amsgrad``) and ``state`` (``exp_avg_sq``/``max_exp_avg_sq`` as full
    tensors, ``step``). Every rank must build it at the same point.

    Args:
        optimizer: the training optimizer (over the sharded parameters).
        sharded: the measured module as training holds it.
        replica: its :func:`plain_replica` (same parameter names, same order).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, sharded: nn.Module, replica: nn.Module):
        pairs = dict(zip(sharded.parameters(), replica.parameters(), strict=True))
        self.param_groups = [
            {
                **{k: v for k, v in group.items() if k != "params"},
                "params": [pairs[p] for p in group["params"] if p in pairs],
            }
            for group in optimizer.param_groups
        ]
        self.state = {
            pairs[p]: {
                key: _full(value) if torch.is_tensor(value) and key != "step" else value
                for key, value in optimizer.state[p].items()
                if key in ("exp_avg_sq", "max_exp_avg_sq", "step")
            }
            for group in optimizer.param_groups
            for p in group["params"]
            if p in pairs and p in optimizer.state
        }


__all__ = ["GatheredOptimizer", "check_data_parallel", "is_sharded", "plain_replica"]
