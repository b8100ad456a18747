"""What a per-sample gradient is taken with respect to, and the checks every engine relies on.

* :func:`select_parameters` — the measured parameters ``θ`` (a filter over ``named_parameters``);
* :func:`check_modes` — no batch norm in training mode, no unannounced dropout;
* :func:`check_pair` — batched inputs and targets with one sample count;
* :func:`tied_aliases` — tensors that two module attributes share (tied weights);
* :func:`plain` and :func:`grad_mode` — detached tensors autograd may use, outside any outer
  ``no_grad`` / ``inference_mode``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> list(select_parameters(net, lambda name, p: name.startswith("1.")))
    ['1.weight', '1.bias']
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ParameterFilter = Callable[[str, nn.Parameter], bool] | Iterable[str] | None
Randomness = Literal["error", "different", "same"]


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached tensor that autograd may use (inference tensors are copied out)."""
    tensor = tensor.detach()
    return tensor.clone() if tensor.is_inference() else tensor


def grad_mode() -> contextlib.ExitStack:
    """Leave any outer ``torch.no_grad()`` / ``torch.inference_mode()`` for the engine's autograd."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def select_parameters(
    model: nn.Module, parameter_filter: ParameterFilter
) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` chosen by a filter, in model order.

    Args:
        model: the module.
        parameter_filter: ``None`` (all parameters with ``requires_grad``), a callable
            ``(name, parameter) -> bool``, or a list of parameter names.

    Raises:
        TypeError: for a bare string instead of a list of names.
        ValueError: for unknown names, or a filter that selects nothing.
    """
    named = dict(model.named_parameters())
    if parameter_filter is None:
        chosen = {n: p for n, p in named.items() if p.requires_grad}
    elif callable(parameter_filter):
        chosen = {n: p for n, p in named.items() if parameter_filter(n, p)}
    else:
        wanted = list(parameter_filter)
        if isinstance(parameter_filter, str):
            raise TypeError(
                f"parameter filter must be a callable (name, parameter) -> bool or a list of "
                f"names, got the string {parameter_filter!r}; write [{parameter_filter!r}]"
            )
        unknown = [n for n in wanted if n not in named]
        if unknown:
            raise ValueError(f"unknown parameter name(s) {unknown}; the model has {list(named)}")
        chosen = {n: named[n] for n in named if n in set(wanted)}
    if not chosen:
        raise ValueError(
            "no parameter selected: the filter matched none of "
            f"{list(named)} (or the model has no trainable parameters)"
        )
    return chosen


def check_modes(model: nn.Module, randomness: Randomness) -> None:
    """Refuse BatchNorm in training mode and active dropout without an explicit ``randomness``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.training:
            raise ValueError(
                f"module {name or type(module).__name__!r} ({type(module).__name__}) is in "
                "training mode: per-sample gradients would use per-chunk batch statistics and "
                "mutate its running statistics; call model.eval() first (batch norm then uses "
                "its running statistics, as at inference)"
            )
        if (
            isinstance(module, nn.modules.dropout._DropoutNd)
            and module.training
            and module.p > 0
            and randomness == "error"
        ):
            raise ValueError(
                f"module {name!r} ({type(module).__name__}, p={module.p}) is in training mode, so "
                "each per-sample gradient draws a random mask; call model.eval(), or pass "
                "randomness='different' (independent masks per sample) or 'same' (one mask)"
            )


def check_pair(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Batched ``(N, C, H, W)`` inputs and targets with the same ``N``."""
    for name, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() < 2:
            raise ValueError(
                f"{name} must be batched, (N, C, H, W), got shape {tuple(value.shape)}"
            )
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets must hold the same number of samples, got {inputs.shape[0]} "
            f"(shape {tuple(inputs.shape)}) and {targets.shape[0]} (shape {tuple(targets.shape)})"
        )
    if inputs.shape[0] == 0:
        raise ValueError("inputs are empty (N = 0); pass at least one sample")


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: name}`` for tensors that two module attributes share (tied weights).

    ``name`` is the tensor's first name in ``model.named_parameters()`` / ``named_buffers()``. A
    module reached along two paths (one layer applied twice) holds its tensors in one place and
    needs no alias: ``named_modules()`` lists it once.
    """
    aliases: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for prefix, module in model.named_modules():
        for named in (module.named_parameters, module.named_buffers):
            for name, tensor in named(prefix=prefix, recurse=False, remove_duplicate=False):
                if id(tensor) in first_name:
                    aliases[name] = first_name[id(tensor)]
                else:
                    first_name[id(tensor)] = name
    return aliases
