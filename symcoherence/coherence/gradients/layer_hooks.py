r"""Per-sample gradients of standard layers from one batched backward, with forward hooks.

For a layer ``y = W ⋆ x + b`` the per-sample gradient of ``Σ_n loss_n`` is an outer product of what
the layer saw and what came back to it: with ``δ_n = ∂loss_n/∂y_n``,

.. math::

    ∇_W loss_n = \sum_t δ_{n,t} \, u_{n,t}^\top, \qquad ∇_b loss_n = \sum_t δ_{n,t},

where ``t`` runs over the positions the weight is applied at and ``u_{n,t}`` is the input patch
there (the input itself for ``nn.Linear``, a ``k×k`` patch for ``nn.Conv2d``, the normalized
input ``x̂`` with elementwise products for the affine part of ``nn.GroupNorm``, ``nn.LayerNorm``
and ``nn.BatchNorm1d/2d`` in eval mode). Samples do not interact, so one batched backward of
``Σ_n loss_n`` delivers every ``δ_n`` at once, and the per-sample gradients cost about one batched
forward and backward plus these products — instead of one backward per sample (a loop) or a
``vmap`` of ``grad``, which on a CPU batches poorly. The convolution's products are the weight
gradient of one grouped convolution, with the samples stacked as groups.

:class:`LayerGradients` covers a model when every selected parameter is the ``weight`` or
``bias`` of a layer of a supported type (exactly: a subclass may compute differently). It registers forward
hooks for one call, and a gradient hook on each covered layer's output that turns ``δ`` into
per-sample gradients as soon as the backward reaches it. Only the input's gradient is asked for,
so the backward runs down to the first layer and computes no summed weight gradient. A layer called several times in one forward adds up its calls. A layer that sees ``m·n`` rows for ``n``
samples — a model that runs ``m`` transformed copies of its batch as one batch, copy-major, as
:class:`~symcoherence.models.GroupAveraged` does — adds up each sample's ``m`` rows.

What hooks cannot see — a parameter also used outside its layer's ``forward``, a layer whose
output does not depend on the input, samples that interact (batch statistics) — gives a wrong
result rather than an error, so :class:`~symcoherence.coherence.gradients.functional.FunctionalModel`
checks the first block against a plain autograd gradient of one sample and falls back to ``vmap``
if they differ.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from symcoherence.coherence import smse
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 1, 1))
    >>> params = {name: p.detach() for name, p in net.named_parameters()}
    >>> layers = LayerGradients.covering(net, params)
    >>> x, y = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    >>> grads = {name: torch.empty(5, *p.shape) for name, p in params.items()}
    >>> losses = layers(lambda inputs: net(inputs), smse, x, y, out=grads)
    >>> grads["0.weight"].shape
    torch.Size([5, 4, 1, 3, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from symcoherence.coherence.gradients.fsdp import plain_class

# one sample's gradient contributions from what a layer saw (x) and got back (δ), batched over n
Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def _linear(module: nn.Linear, x: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``∇W = Σ_t δ_t x_tᵀ``, ``∇b = Σ_t δ_t`` over the positions ``t`` of ``(n, *, features)``."""
    num = x.shape[0]
    inputs = x.reshape(num, -1, x.shape[-1])
    deltas = delta.reshape(num, -1, delta.shape[-1])
    return {"weight": torch.bmm(deltas.transpose(1, 2), inputs), "bias": deltas.sum(1)}


def _conv_padding(module: nn.Conv2d) -> list[int]:
    """``F.pad`` widths ``[left, right, top, bottom]`` of a convolution's own padding."""
    if module.padding == "valid":
        return [0, 0, 0, 0]
    if module.padding == "same":
        widths = []
        for size, dilation in zip(
            reversed(module.kernel_size), reversed(module.dilation), strict=True
        ):
            total = dilation * (size - 1)
            widths += [total // 2, total - total // 2]
        return widths
    return [side for pad in reversed(module.padding) for side in (pad, pad)]


def _conv2d(module: nn.Conv2d, x: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``∇W_n = Σ_t δ_{n,t} u_{n,t}ᵀ``, ``u_{n,t}`` the input patch at output position ``t``.

    All samples at once, as the weight gradient of one convolution with ``n·groups`` groups: the
    samples stacked along the channels, so that no sample meets another's filters.
    """
    num, channels = x.shape[:2]
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        padded, padding = x, module.padding
    else:
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        padded, padding = F.pad(x, _conv_padding(module), mode=mode), 0
    out_channels = delta.shape[1]
    weight = torch.nn.grad.conv2d_weight(
        padded.reshape(1, num * channels, *padded.shape[2:]),
        (num * out_channels, *module.weight.shape[1:]),
        delta.reshape(1, num * out_channels, *delta.shape[2:]),
        module.stride,
        padding,
        module.dilation,
        num * module.groups,
    )
    return {
        "weight": weight.reshape(num, *module.weight.shape),
        "bias": delta.sum((2, 3)),
    }


def _affine(normalized: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``∇γ_c = Σ_t δ_{c,t} x̂_{c,t}``, ``∇β_c = Σ_t δ_{c,t}`` for a per-channel affine map of ``x̂``."""
    num, channels = delta.shape[:2]
    return {
        "weight": (delta * normalized).reshape(num, channels, -1).sum(-1),
        "bias": delta.reshape(num, channels, -1).sum(-1),
    }


def _group_norm(
    module: nn.GroupNorm, x: torch.Tensor, delta: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The affine part's gradients (:func:`_affine`) with ``x̂`` the group-normalized input."""
    return _affine(F.group_norm(x, module.num_groups, eps=module.eps), delta)


def _layer_norm(
    module: nn.LayerNorm, x: torch.Tensor, delta: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``∇γ = Σ_t δ_t ⊙ x̂_t``, ``∇β = Σ_t δ_t`` over the leading positions, ``x̂`` normalized."""
    normalized = F.layer_norm(x, module.normalized_shape, eps=module.eps)
    num, shape = x.shape[0], module.normalized_shape
    return {
        "weight": (delta * normalized).reshape(num, -1, *shape).sum(1),
        "bias": delta.reshape(num, -1, *shape).sum(1),
    }


def _batch_norm(
    module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, delta: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The affine part's gradients (:func:`_affine`), ``x̂`` normalized by running statistics.

    Only in eval mode with running statistics; in any other mode samples share batch statistics.
    """
    if module.training or module.running_mean is None:
        raise HookMismatch(f"{type(module).__name__} normalizes with batch statistics")
    normalized = F.batch_norm(
        x, module.running_mean, module.running_var, training=False, eps=module.eps
    )
    return _affine(normalized, delta)


RULES: dict[type[nn.Module], Rule] = {
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.Linear: _linear,
    nn.Conv2d: _conv2d,
    nn.GroupNorm: _group_norm,
    nn.LayerNorm: _layer_norm,
}
_STANDARD = frozenset(RULES)


def register_rule(layer_type: type[nn.Module], rule: Rule) -> None:
    """Teach the hooks a layer type of one's own.

    Args:
        layer_type: the exact module class (subclasses are not covered by it).
        rule: ``rule(module, x, delta) -> {local parameter name: (n, *shape)}``: the per-sample
            gradients of ``Σ_n loss_n`` with respect to the layer's parameters, from its input
            ``x`` (the first positional argument of ``forward``) and the gradient ``delta`` with
            respect to its output, both batched over ``n``. (Complex parameters are not covered;
            store complex weights as real tensors with a trailing ``(real, imag)`` axis.)

    The first measurement of every model checks the hooks against plain autograd on one sample, so
    a wrong rule makes the engine fall back to ``vmap`` rather than give wrong numbers.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Gain(nn.Module):  # y = g ⊙ x per channel
        ...     def __init__(self, channels):
        ...         super().__init__()
        ...         self.gain = nn.Parameter(torch.ones(channels))
        ...     def forward(self, x):
        ...         return self.gain[:, None, None] * x
        >>> register_rule(Gain, lambda module, x, delta: {"gain": (delta * x).sum((2, 3))})
        >>> from symcoherence.coherence import smse
        >>> from symcoherence.coherence.gradients import FunctionalModel
        >>> from symcoherence.coherence.gradients.parameters import grad_mode
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), Gain(2), nn.Tanh())
        >>> fmodel = FunctionalModel(net)
        >>> x, y = torch.randn(6, 1, 8, 8), torch.randn(6, 2, 8, 8)
        >>> with grad_mode():
        ...     rows = fmodel.flat_grad_matrix(smse, x, y, chunk_size=3).rows
        >>> fmodel.engine, tuple(rows.shape)
        ('layers', (6, 22))
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"layer_type must be an nn.Module subclass, got {layer_type!r}")
    if not callable(rule):
        raise TypeError(f"rule must be callable (module, x, delta) -> dict, got {rule!r}")
    RULES[layer_type] = rule


# what a covered layer saw and got back, for callers that need more than the gradients (EK-FAC)
Observer = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]


class HookMismatch(RuntimeError):
    """The hooks could not produce the per-sample gradients (the model is not covered after all)."""


def _per_sample(value: torch.Tensor, num: int) -> torch.Tensor:
    """A rule's rows ``(m·n, ...)`` as ``n`` per-sample values: the sum of each sample's ``m`` copies.

    Copy-major (row ``k·n + i`` is copy ``k`` of sample ``i``); a model that stacks its copies
    sample-major gets wrong sums here, which the engine's check against autograd catches.
    """
    rows = value.shape[0]
    if rows == num:
        return value
    if rows % num:
        raise HookMismatch(f"a layer saw a batch of {rows} rows for {num} samples")
    return value.reshape(rows // num, num, *value.shape[1:]).sum(0)


@dataclass
class _Layer:
    """A covered layer: its rule and ``{local name: parameter name}`` of the selected parameters."""

    rule: Rule
    names: dict[str, str]


class LayerGradients:
    """Per-sample gradients of the covered layers of a model, from one batched backward.

    Build it with :meth:`covering`, which returns ``None`` for models it cannot cover.

    Args:
        layers: ``{module: _Layer}`` for every module that owns selected parameters.
    """

    def __init__(self, layers: dict[nn.Module, _Layer]):
        self._layers = layers

    @property
    def modules(self) -> dict[nn.Module, dict[str, str]]:
        """``{module: {local name: parameter name}}`` of every covered layer, in model order."""
        return {module: dict(layer.names) for module, layer in self._layers.items()}

    @classmethod
    def covering(cls, model: nn.Module, params: dict[str, torch.Tensor]) -> LayerGradients | None:
        """The hook engine for ``params`` (``{name: tensor}``) of ``model``, or ``None``.

        ``None`` when a selected parameter is complex, not the ``weight`` / ``bias`` of a layer
        whose type is exactly one of :data:`RULES`, or shared between layers.
        """
        owners: dict[str, tuple[nn.Module, str]] = {}
        holders: dict[int, nn.Module] = {}
        for prefix, module in model.named_modules():  # a layer reached twice is listed once
            for local, tensor in module.named_parameters(recurse=False, remove_duplicate=False):
                if holders.setdefault(id(tensor), module) is not module:
                    return None  # tied weights: a hook sees only one of the layers that use them
                owners[f"{prefix}.{local}" if prefix else local] = (module, local)
        layers: dict[nn.Module, _Layer] = {}
        for name, tensor in params.items():
            if name not in owners or tensor.is_complex() or not tensor.is_floating_point():
                return None
            module, local = owners[name]
            kind = plain_class(module)  # a layer sharded by FSDP2 keeps its rule
            rule = RULES.get(kind)
            if rule is None or (kind in _STANDARD and local not in ("weight", "bias")):
                return None
            layers.setdefault(module, _Layer(rule, {})).names[local] = name
        return cls(layers)

    def __call__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        out: dict[str, torch.Tensor],
        observe: Observer | None = None,
    ) -> torch.Tensor:
        """Write the per-sample gradients of ``loss_fn(forward(x)[i], y[i])`` into ``out``.

        Args:
            forward: the model on a batch.
            loss_fn: per-sample loss on unbatched tensors.
            inputs: ``(n, ...)``.
            targets: ``(n, ...)``.
            out: ``{name: (n, *shape)}`` for every selected parameter, overwritten (views into
                one flat matrix, so that nothing is copied again).
            observe: as in :meth:`stream`.

        Returns:
            The per-sample losses ``(n,)``, detached.

        Raises:
            HookMismatch: when a covered layer's output does not depend on the input, or a
                selected parameter was not reached by the backward.
        """
        written: set[str] = set()

        def receive(name: str, value: torch.Tensor, complete: bool) -> None:
            if name in written:
                out[name].add_(value)
            else:
                out[name].copy_(value)
                written.add(name)

        dtype = next(iter(out.values())).dtype
        losses = self.stream(forward, loss_fn, inputs, targets, receive, observe, dtype=dtype)
        missing = sorted(set(out) - written)
        if missing:
            raise HookMismatch(f"the backward did not reach the layers of {missing}")
        return losses

    def stream(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        receive: Callable[[str, torch.Tensor, bool], None],
        observe: Observer | None = None,
        dtype: torch.dtype | None = None,
        rules: dict[nn.Module, Rule] | None = None,
    ) -> torch.Tensor:
        """Hand each layer's per-sample gradients to ``receive`` as the backward reaches it.

        ``receive(name, value, complete)`` gets ``value`` ``(n, *shape)``, the contribution of one
        call of the layer to parameter ``name``; ``complete`` is ``True`` at the layer's last call
        of this forward, when its gradients are whole.

        What the layers saw and got back is upcast to ``dtype`` before the products (a layer run
        in bfloat16 by a mixed-precision policy or autocast still gives float32 rows). Forward
        calls made during the backward (activation checkpointing recomputes its blocks there)
        are not captured: autograd's gradients still flow through the first forward's outputs.

        Args:
            forward: the model on a batch.
            loss_fn: per-sample loss on unbatched tensors.
            inputs: ``(n, ...)``.
            targets: ``(n, ...)``.
            receive: takes the gradients.
            observe: called as ``observe(module, x, delta)`` with what each covered layer saw and
                got back (both batched over ``n``), once per call of the layer, before its rule.
            dtype: the precision of the products (default: that of the activations).
            rules: rules that replace the covered ones for some layers, for callers that want
                something else from ``x`` and ``δ`` than the gradients (a projection of them).

        Returns:
            The per-sample losses ``(n,)``, detached.
        """
        calls: dict[nn.Module, int] = {}
        returned: dict[nn.Module, int] = {}
        recomputing = False

        def upcast(tensor: torch.Tensor) -> torch.Tensor:
            if dtype is None or tensor.dtype == dtype or not tensor.is_floating_point():
                return tensor
            return tensor.to(dtype)

        def on_forward(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if recomputing:
                return
            layer = self._layers[module]
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                raise HookMismatch(
                    f"the output of {type(module).__name__} does not depend on the input"
                )
            seen = upcast(args[0].detach())
            calls[module] = calls.get(module, 0) + 1

            def on_backward(delta: torch.Tensor) -> None:
                delta = upcast(delta)
                if observe is not None:
                    observe(module, seen, delta)
                returned[module] = returned.get(module, 0) + 1
                complete = returned[module] == calls[module]
                rule = layer.rule if rules is None else rules.get(module, layer.rule)
                for local, value in rule(module, seen, delta).items():
                    name = layer.names.get(local)
                    if name is not None:
                        receive(name, _per_sample(value, inputs.shape[0]), complete)

            output.register_hook(on_backward)

        handles = [module.register_forward_hook(on_forward) for module in self._layers]
        try:
            leaf = inputs.detach().requires_grad_()
            predictions = forward(leaf)
            losses = torch.stack([loss_fn(p, t) for p, t in zip(predictions, targets, strict=True)])
            recomputing = True
            torch.autograd.grad(losses.sum(), leaf)
        finally:
            for handle in handles:
                handle.remove()
        return losses.detach()


__all__ = ["RULES", "HookMismatch", "LayerGradients", "register_rule"]
