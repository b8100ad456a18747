"""Leave no trace: run a measurement inside training without changing the training it observes.

Example:
    >>> import torch
    >>> from symcoherence.callbacks._isolation import isolated
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    >>> before = torch.get_rng_state()
    >>> with isolated(net, [], eval_mode=True):
    ...     _ = torch.randn(3), net.training
    >>> net.training, torch.equal(before, torch.get_rng_state())
    (True, True)
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def isolated(
    module: nn.Module, optimizers: Sequence[torch.optim.Optimizer], eval_mode: bool
) -> Iterator[None]:
    """Run a measurement without a trace on training; everything is restored in ``finally``.

    Restored: the global RNG states (torch CPU and CUDA, numpy, Python ``random``), every
    submodule's train/eval mode, and ``requires_grad`` and ``.grad`` of every parameter.
    Guarded: parameters, buffers and optimizer state tensors must not be written to. The
    measurement works on detached copies and never writes them, so instead of keeping a full copy
    of the model and optimizer (≈ 3× the model for Adam) their version counters are compared, and
    a write raises ``RuntimeError`` naming the tensor. Inside, inference mode is left, gradients
    are enabled and autocast is disabled (float32 math under AMP).
    """
    rng = (
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        np.random.get_state(),  # noqa: NPY002 - the global state is what must be restored
        random.getstate(),
    )
    modes = [(m, m.training) for m in module.modules()]
    params = list(module.parameters())
    flags = [(p, p.requires_grad, p.grad) for p in params]
    watched = [(f"parameter {n!r}", t) for n, t in module.named_parameters()]
    watched += [(f"buffer {n!r}", t) for n, t in module.named_buffers()]
    for index, optimizer in enumerate(optimizers):
        watched += [
            (f"optimizer {index} state {key!r}", value)
            for state in optimizer.state.values()
            for key, value in state.items()
            if torch.is_tensor(value)
        ]
    versions = [tensor._version for _, tensor in watched]
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            if eval_mode:
                module.eval()
            yield
    finally:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
        np.random.set_state(rng[2])  # noqa: NPY002
        random.setstate(rng[3])
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for p, requires_grad, grad in flags:
                p.requires_grad_(requires_grad)
                p.grad = grad
    written = [name for (name, t), v in zip(watched, versions, strict=True) if t._version != v]
    if written:
        raise RuntimeError(
            f"the measurement wrote to {', '.join(written)}, which training owns; a model whose "
            "forward pass updates its own state (running statistics, caches) must be measured in "
            "a mode where it does not (eval_mode=True)"
        )
