r"""The per-sample loop: one plain ``torch.autograd.grad`` per sample, the engine of last resort.

``a_n = ∇θ loss(f_θ(x_n), y_n)`` is computed sample by sample on detached leaves. The same
single-sample gradient is the reference the other engines are checked against and the first
sample of every measurement (whose forward also measures the activation memory). Models that
``vmap`` cannot batch — an in-place write of per-sample values into a tensor created in
``forward``, an operator without a batching rule, ``.item()`` or data-dependent control flow, a
custom ``torch.autograd.Function`` without ``setup_context`` or a vmap rule — run here, after one
warning (:func:`warn_loop_fallback`).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> def loss(params, x, y):
    ...     return (torch.func.functional_call(net, params, (x,)) - y).pow(2).mean()
    >>> params = {n: p.detach() for n, p in net.named_parameters()}
    >>> grads, losses = loop_chunk(loss, params, torch.randn(4, 3), torch.randn(4, 2))
    >>> grads["weight"].shape, losses.shape
    (torch.Size([4, 2, 3]), torch.Size([4]))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

SampleLoss = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]

# Fragments of the errors that torch.func's transforms raise for code that plain autograd runs:
# "vmap: ..." (in-place writes of per-sample values into a tensor shared by all samples, `.item()`,
# data-dependent control flow), operators without a batching rule, in-place writes to buffers
# under `grad` ("would mutate a captured Tensor"), `.numpy()` / data pointers of transformed
# tensors ("doesn't have storage") and custom autograd.Functions written for plain autograd only
# (no `setup_context`, or no vmap rule). Errors about random operations never qualify: they are
# what the `randomness` argument decides.
_TRANSFORM_ONLY_ERRORS = (
    "vmap: ",
    "batching rule",
    "would mutate a captured Tensor",
    "doesn't have storage",
    "autograd.Function with functorch transforms",
    "does not have vmap support",
)


def sample_gradient(
    sample_loss: SampleLoss,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    require_all: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One sample's gradient ``{name: (*shape)}`` and its loss, with plain ``torch.autograd.grad``.

    Args:
        sample_loss: ``(params, x, y) -> scalar`` for one unbatched sample.
        params: the parameters ``θ`` (detached; fresh leaves are made of them).
        x: one input, unbatched.
        y: its target.
        require_all: raise if the loss does not depend on some parameter (else its gradient is
            zero, as for a sample whose loss does not reach it).

    Raises:
        ValueError: with ``require_all``, naming the parameters the loss does not depend on.
    """
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    loss = sample_loss(leaves, x, y)
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    else:
        grads = (None,) * len(leaves)
    if require_all:
        unused = [name for name, g in zip(leaves, grads, strict=True) if g is None]
        if unused:
            raise ValueError(_unused_message(unused, list(leaves)))
    grads = {
        name: torch.zeros_like(leaf) if g is None else g
        for (name, leaf), g in zip(leaves.items(), grads, strict=True)
    }
    return grads, loss.detach()


def loop_chunk(
    sample_loss: SampleLoss,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The gradients ``{name: (c, *shape)}`` and losses ``(c,)`` of a chunk, one sample at a time."""
    parts, losses = zip(
        *(sample_gradient(sample_loss, params, x, y) for x, y in zip(inputs, targets, strict=True)),
        strict=True,
    )
    return {name: torch.stack([p[name] for p in parts]) for name in parts[0]}, torch.stack(losses)


def loop_avoids(error: RuntimeError) -> bool:
    """Whether ``error`` comes from a ``torch.func`` transform that a plain autograd loop avoids."""
    message = str(error)
    return "random" not in message and any(part in message for part in _TRANSFORM_ONLY_ERRORS)


def warn_loop_fallback(error: RuntimeError) -> None:
    """Say, once per model, why its per-sample gradients fall back to the loop."""
    warnings.warn(
        f"vmap cannot batch this model's per-sample gradients ({type(error).__name__}: "
        f"{error}); falling back to a per-sample loop; pass chunk_size=1 to choose it "
        "directly",
        stacklevel=4,
    )


def _unused_message(unused: list[str], selected: list[str]) -> str:
    """The error for selected parameters that the loss does not depend on."""
    fixes = (
        "keep such layers in training mode while measuring (OrbitCoherenceMonitor("
        "eval_mode=False), or call .train() on them)"
    )
    if len(unused) < len(selected):
        fixes += (
            ", or leave the unused parameters out with a parameter_filter (a callable "
            "(name, parameter) -> bool that is False for them, or a list of the other names)"
        )
    return (
        f"the loss does not depend on the selected parameter(s) {unused} (checked on the first "
        "sample), so their per-sample gradients would be meaningless zeros. Either the forward "
        "pass does not use them (a head that is not called) or it uses a copy of them, such as "
        "a filter that a layer caches in a buffer in eval mode (escnn's R2Conv). Fix: " + fixes
    )
