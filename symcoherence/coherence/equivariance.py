r"""Forward equivariance errors measured with the training loss.

One step, per element ``g`` and probe ``n``:

.. math:: E_n(g) = \frac{\mathrm{loss}(f(g·x_n),\, g·y_n)}{\mathrm{loss}(f(x_n),\, y_n)},

so ``E = 1`` means the model is as accurate on the transformed state as on the original, and
``E_n(e) = 1``. Rollout, ``T`` autoregressive steps from ``x_0`` (no targets needed):

.. math:: R_n(g) = \mathrm{loss}\big(f^T(g·x_{0,n}),\; g·f^T(x_{0,n})\big),

the loss between the rollout of the transformed state and the transformed rollout (``R_n(e) = 0``);
with :func:`~symcoherence.coherence.smse` it is relative to the transformed rollout's RMS.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    >>> shifts, scalar = sc.groups.Shifts(line=("x", [1])), sc.FieldType(["scalar"])
    >>> error = sc.equivariance_error(net, sc.smse, x, y, shifts, scalar)
    >>> error.shape, bool(torch.allclose(error, torch.ones(2, 3)))
    (torch.Size([2, 3]), True)
    >>> sc.rollout_equivariance_error(net, sc.smse, x, shifts, scalar, steps=2).abs().max() < 1e-6
    tensor(True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import vmap

from symcoherence.coherence.gradients.parameters import LossFn, check_modes
from symcoherence.coherence.influence import check_fields, resolve_elements
from symcoherence.groups import FieldType, Group


def _losses(loss_fn: LossFn, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return vmap(loss_fn)(predictions, targets)


def equivariance_error(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    group: Group,
    field_type: FieldType,
    *,
    target_field_type: FieldType | None = None,
    elements: Sequence[str] | None = None,
) -> torch.Tensor:
    r"""``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)`` for every element and probe.

    Args:
        model: maps ``(B, C, H, W)`` to predictions shaped like the targets; run without
            gradients and must be in a deterministic mode (no training-mode dropout/BatchNorm).
        loss_fn: per-sample loss on unbatched tensors.
        inputs: ``(N, C, H, W)``.
        targets: ``(N, C', H, W)``.
        group: the symmetry group; pairs are moved with ``group.act_pair``.
        field_type: field type of the inputs.
        target_field_type: field type of the targets (default ``field_type``).
        elements: element names (default: all).

    Returns:
        ``(K, N)``. A probe the model fits exactly (loss 0) gives ``inf`` (or NaN for 0/0).
    """
    target_field_type = check_fields(inputs, targets, field_type, target_field_type)
    names = resolve_elements(group, elements)
    check_modes(model, "error")
    with torch.no_grad():
        base = _losses(loss_fn, model(inputs), targets)
        rows = []
        for element in names:
            moved_x, moved_y = group.act_pair(
                element, inputs, targets, field_type, target_field_type
            )
            rows.append(_losses(loss_fn, model(moved_x), moved_y) / base)
    return torch.stack(rows)


def rollout_equivariance_error(
    model: nn.Module,
    loss_fn: LossFn,
    x0: torch.Tensor,
    group: Group,
    field_type: FieldType,
    *,
    steps: int,
    elements: Sequence[str] | None = None,
) -> torch.Tensor:
    r"""``R_n(g) = loss(f^T(g·x0_n), g·f^T(x0_n))`` after ``T = steps`` autoregressive steps.

    Args:
        model: a one-step map whose output has the input's shape and field type.
        loss_fn: per-sample loss on unbatched tensors.
        x0: initial states ``(N, C, H, W)``.
        group: the symmetry group.
        field_type: field type of the state.
        steps: ``T >= 1``.
        elements: element names (default: all).

    Returns:
        ``(K, N)``; ``0`` for the identity and for an exactly equivariant model.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    check_fields(x0, x0, field_type, field_type)
    names = resolve_elements(group, elements)
    check_modes(model, "error")

    def rollout(state: torch.Tensor) -> torch.Tensor:
        for _ in range(steps):
            nxt = model(state)
            if nxt.shape != state.shape:
                raise ValueError(
                    f"a rollout feeds outputs back as inputs, so the model must map shape "
                    f"{tuple(state.shape)} to itself; got {tuple(nxt.shape)}"
                )
            state = nxt
        return state

    with torch.no_grad():
        final = rollout(x0)
        rows = [
            _losses(
                loss_fn,
                rollout(group.act(element, x0, field_type)),
                group.act(element, final, field_type),
            )
            for element in names
        ]
    return torch.stack(rows)


__all__ = ["equivariance_error", "rollout_equivariance_error"]
