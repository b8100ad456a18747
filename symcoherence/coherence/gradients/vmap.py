r"""The ``vmap`` engine: ``vmap(grad_and_value(θ ↦ loss(f_θ(x), y)))`` over a chunk of samples.

Used where the layer hooks do not cover every measured parameter (a raw parameter outside a
layer, an unregistered layer type, tied weights), and for active dropout, where only ``vmap``
draws an independent mask per sample (``randomness="different"``). The loss is differentiated
through ``torch.func.functional_call`` on detached parameters, so the model is never modified.

Example:
    >>> import torch
    >>> def loss(params, x, y):                     # (w·x − y)², so ∇w = 2 (w·x − y) x
    ...     return ((params["w"] * x).sum() - y) ** 2
    >>> grads, losses = batched_gradients(loss, "error")({"w": torch.ones(2)}, torch.eye(2), torch.zeros(2))
    >>> grads["w"].tolist(), losses.tolist()
    ([[2.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value, vmap

from symcoherence.coherence.gradients.loop import SampleLoss
from symcoherence.coherence.gradients.parameters import Randomness

BatchedGradients = Callable[
    [dict[str, torch.Tensor], torch.Tensor, torch.Tensor],
    tuple[dict[str, torch.Tensor], torch.Tensor],
]


def batched_gradients(sample_loss: SampleLoss, randomness: Randomness) -> BatchedGradients:
    """``(params, inputs, targets) -> ({name: (c, *shape)}, losses (c,))`` for a chunk.

    Args:
        sample_loss: ``(params, x, y) -> scalar`` for one unbatched sample.
        randomness: ``vmap``'s treatment of random operations (``"error"``, ``"different"``,
            ``"same"``).
    """
    return vmap(grad_and_value(sample_loss), in_dims=(None, 0, 0), randomness=randomness)
