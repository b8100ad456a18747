r"""``per_sample_grads``: the per-sample loss gradients ``a_n = ∇θ loss(f_θ(x_n), y_n)`` of a model.

The public entry point to the engines of :class:`~symcoherence.coherence.gradients.functional.
FunctionalModel`: one batched backward with layer hooks where they cover the model, else
``vmap(grad(·))``, else a per-sample loop of ``torch.autograd.grad``.

Example:
    >>> import torch
    >>> from symcoherence.coherence import per_sample_grads, smse
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    >>> grads = per_sample_grads(net, smse, x, y)
    >>> grads["weight"].shape
    torch.Size([4, 1, 1, 3, 3])
    >>> per_sample_grads(net, smse, x, y, flatten=True).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from symcoherence.coherence.gradients.chunking import ChunkSize
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.memory import DEFAULT_MEMORY_FRACTION, MemoryLimit
from symcoherence.coherence.gradients.parameters import (
    LossFn,
    ParameterFilter,
    Randomness,
    check_modes,
    check_pair,
    grad_mode,
    plain,
)


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: ChunkSize = "auto",
    parameter_filter: ParameterFilter = None,
    *,
    flatten: bool = False,
    randomness: Randomness = "error",
    max_memory: MemoryLimit = DEFAULT_MEMORY_FRACTION,
) -> dict[str, torch.Tensor] | torch.Tensor:
    r"""Per-sample gradients ``a_n = ∇θ loss(f_θ(x_n), y_n)``, ``n = 1..N``.

    Computed with ``functional_call`` on detached parameters and buffers, through one batched
    backward with layer hooks where they cover every parameter, else ``vmap(grad(θ ↦ loss(f_θ(x),
    y)))``, else a per-sample loop; the model and its statistics are left untouched, and outer
    ``torch.no_grad()`` / ``torch.inference_mode()`` contexts are exited for the computation.

    Args:
        model: maps a batch ``(B, C, H, W)`` to predictions ``(B, ...)``.
        loss_fn: per-sample loss ``loss_fn(prediction, target) -> scalar`` on unbatched tensors
            (e.g. :func:`~symcoherence.coherence.smse`).
        inputs: ``(N, C, H, W)``.
        targets: ``(N, ...)``, one per input.
        chunk_size: samples per batched call: ``"auto"`` (bounded memory, never slower than a loop
            on CPU), a positive int, or ``None`` for all at once. ``1`` runs a plain loop of
            ``torch.autograd.grad``, which is also what a model that ``vmap`` cannot batch falls
            back to (with a warning naming the cause).
        parameter_filter: which parameters: ``None`` (all with ``requires_grad``), a callable
            ``(name, parameter) -> bool`` or a list of names.
        flatten: return one ``(N, P)`` real tensor (complex parameters as real/imaginary pairs, in
            ``model.named_parameters()`` order) instead of a dict.
        randomness: ``vmap`` randomness for modules that draw random numbers (dropout in training
            mode): ``"error"`` (refuse), ``"different"`` or ``"same"`` mask across samples.
        max_memory: memory budget of automatic chunks, in bytes (an int) or as a fraction of the
            device's free memory (a float in (0, 1], default 0.25).

    Returns:
        ``{name: (N, *param.shape)}``, or ``(N, P)`` when ``flatten``.

    Raises:
        ValueError: on mismatched sample counts, BatchNorm in training mode, active dropout with
            ``randomness="error"``, a filter that selects nothing, or selected parameters that
            the loss does not depend on (unused, or replaced by a cached copy in eval mode).

    Warns:
        UserWarning: once, when ``vmap`` cannot batch the model (e.g. an in-place write into a
            tensor created in ``forward``) and the per-sample loop is used instead.
    """
    check_pair(inputs, targets)
    check_modes(model, randomness)
    with grad_mode():
        fmodel = FunctionalModel(model, parameter_filter, max_memory=max_memory)
        inputs, targets = plain(inputs), plain(targets)
        if flatten:
            return fmodel.flat_grad_matrix(loss_fn, inputs, targets, chunk_size, randomness).rows
        blocks = [
            block
            for _, block in fmodel.grad_blocks(loss_fn, inputs, targets, chunk_size, randomness)
        ]
        return {name: torch.cat([b[name] for b in blocks]) for name in fmodel.layout.names}
