r"""The model as a pure function of its measured parameters, and the choice of per-sample engine.

:class:`FunctionalModel` calls the model with ``torch.func.functional_call`` on a detached copy of
its selected parameters and buffers, and yields per-sample gradients
``a_n = ∇θ loss(f_θ(x_n), y_n)`` chunk by chunk from one of three engines:

* **layer hooks** (:mod:`~symcoherence.coherence.gradients.layer_hooks`): where every selected
  parameter belongs to a covered layer (``nn.Linear``, ``nn.Conv2d``, ``nn.GroupNorm``,
  ``nn.LayerNorm``, eval-mode ``nn.BatchNorm1d/2d``, or a layer with a registered rule), one
  batched backward gives a chunk's per-sample gradients; the hooks are kept only if they reproduce
  one plain gradient, checked once per measurement;
* **vmap** (:mod:`~symcoherence.coherence.gradients.vmap`): ``vmap(grad(·))`` otherwise;
* **loop** (:mod:`~symcoherence.coherence.gradients.loop`): one ``torch.autograd.grad`` per sample,
  where ``vmap`` cannot batch the model (after one warning) or a chunk holds one sample.

Chunks are sized so that their memory (the activations and gradients of the chunk's samples,
measured on the first sample) stays within a budget (see
:func:`~symcoherence.coherence.gradients.chunking.resolve_chunk_size`). Complex parameters
(spectral layers) are flattened as pairs of real numbers, so the flat inner product is the real
Euclidean one, ``⟨b, a⟩ = Σ Re(b̄ a)``. A selected parameter that the loss does not depend on
(an unused head, or a layer that convolves with a filter cached in eval mode) is reported as an
error rather than given silent zero gradients.

Example:
    >>> import torch
    >>> from symcoherence.coherence import smse
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> fmodel = FunctionalModel(net)
    >>> x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    >>> rows = fmodel.flat_grad_matrix(smse, x, y)
    >>> rows.rows.shape, fmodel.engine
    (torch.Size([4, 10]), 'layers')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from symcoherence.coherence.gradients.chunking import ChunkSize, SavedBytes, resolve_chunk_size
from symcoherence.coherence.gradients.layer_hooks import HookMismatch, LayerGradients
from symcoherence.coherence.gradients.layout import ParameterLayout
from symcoherence.coherence.gradients.loop import (
    loop_avoids,
    loop_chunk,
    sample_gradient,
    warn_loop_fallback,
)
from symcoherence.coherence.gradients.memory import (
    DEFAULT_MEMORY_FRACTION,
    MemoryLimit,
    resolve_memory_budget,
)
from symcoherence.coherence.gradients.parameters import (
    LossFn,
    ParameterFilter,
    Randomness,
    plain,
    select_parameters,
    tied_aliases,
)
from symcoherence.coherence.gradients.rows import GradientRows, GradientSource
from symcoherence.coherence.gradients.vmap import batched_gradients

Engine = Literal["layers", "vmap", "loop"]


class FunctionalModel(GradientSource):
    """A model called as a pure function of a (selected) parameter dict.

    The first gradient computation checks, with one plain autograd pass on its first sample, that
    the loss depends on every selected parameter. Per-sample gradients come from layer hooks where
    they cover the model (:mod:`~symcoherence.coherence.gradients.layer_hooks`; kept only if they reproduce
    that first gradient), else from ``vmap``; where ``vmap`` cannot batch the model either, it
    switches, with one warning, to a per-sample loop of ``torch.autograd.grad`` for this and
    every later call. Modules are never hashed inside ``torch.func`` transforms (tied parameters are
    resolved once, up front), so modules whose ``__hash__`` reads tensor data work.

    Args:
        model: the module; it is never modified.
        parameter_filter: ``None`` (all parameters with ``requires_grad``), a callable
            ``(name, parameter) -> bool``, or a list of parameter names.
        held_params: the numbers per gradient that the measurement holds for its ``N`` probes
            beside a chunk (default: the selected ``P``; fewer where gradients are projected).
        max_memory: the memory budget of automatic chunks: bytes, or a fraction of the device's
            free memory, resolved once here (see :mod:`~symcoherence.coherence.gradients.memory`).
        layer_hooks: try layer hooks before ``vmap`` (``False``: ``vmap`` or the loop only).

    Attributes:
        params: the selected parameters, detached ``{name: tensor}``.
        originals: the same parameters as the model holds them (for optimizer-state look-ups).
        constants: the other parameters and the buffers, detached ``{name: tensor}``.
        layout: their :class:`~symcoherence.coherence.gradients.layout.ParameterLayout` (``layout.size``
            is ``P``).
        device: the device of the selected parameters.
        dtype: their real dtype (``float32`` for ``complex64`` parameters).
        engine: ``"layers"``, ``"vmap"`` or ``"loop"``: how the next chunk will be computed.
        memory_budget: the budget of automatic chunks, in bytes.
        largest_chunk: the most samples one batched call has taken so far.
    """

    def __init__(
        self,
        model: nn.Module,
        parameter_filter: ParameterFilter = None,
        *,
        held_params: int | None = None,
        layer_hooks: bool = True,
        max_memory: MemoryLimit = DEFAULT_MEMORY_FRACTION,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        chosen = select_parameters(model, parameter_filter)
        self.originals = chosen
        self.params = {n: plain(p) for n, p in chosen.items()}
        self.constants = {n: plain(p) for n, p in model.named_parameters() if n not in chosen}
        self.constants.update({n: plain(b) for n, b in model.named_buffers()})
        self.layout = ParameterLayout(self.params)
        self.held_params = self.layout.size if held_params is None else held_params
        first = next(iter(self.params.values()))
        self.device = first.device
        self.memory_budget = resolve_memory_budget(max_memory, self.device)
        self.largest_chunk = 0  # the most samples one call took so far
        self.dtype = first.real.dtype if first.is_complex() else first.dtype
        self._aliases = tied_aliases(model)
        self._connected = False  # set once the first sample proved every parameter is used
        self._activation_bytes: dict[tuple[int, ...], int] = {}  # per sample shape
        self._layers = LayerGradients.covering(model, self.params) if layer_hooks else None
        self._layers_checked = False  # set once the hooks reproduced one plain gradient
        self.engine: Engine = "vmap" if self._layers is None else "layers"

    def __call__(self, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """``f_θ(inputs)`` for a batch ``(B, C, H, W)``."""
        values = {**self.constants, **params}
        values.update({alias: values[name] for alias, name in self._aliases.items()})
        # tie_weights=False: torch would otherwise find tied tensors by walking (and hashing) the
        # modules inside the transform; the ties were resolved in __init__ instead
        return functional_call(self.model, values, (inputs,), tie_weights=False)

    def sample_loss(self, loss_fn: LossFn) -> Callable:
        """``(params, x, y) -> loss(f(x[None])[0], y)`` for one unbatched sample."""

        def loss(params, x, y):
            return loss_fn(self(params, x.unsqueeze(0)).squeeze(0), y)

        return loss

    def grad_blocks(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
        """Yield ``(samples, {name: (c, *shape)})`` per chunk of samples (see :meth:`_chunks`)."""
        for samples, block, _ in self._chunks(loss_fn, inputs, targets, chunk_size, randomness):
            yield samples, self.layout.unflatten(block) if torch.is_tensor(block) else block

    def _chunks(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize,
        randomness: Randomness,
    ) -> Iterator[tuple[slice, dict[str, torch.Tensor] | torch.Tensor, torch.Tensor]]:
        """Yield ``(samples, gradients, losses)`` per chunk.

        The gradients are ``{name: (c, *shape)}`` or flat ``(c, P)``; the losses ``(c,)`` are the
        per-sample losses that the gradient passes computed on the way.

        On the first call, and with ``chunk_size="auto"`` on the first call for a sample shape,
        the first sample runs alone through plain autograd: its forward measures the activation
        memory that sizes the automatic chunks (:func:`resolve_chunk_size`), and the first call
        checks that the loss depends on every selected parameter. The other samples follow in
        chunks, through layer hooks where they cover the model (:attr:`engine` ``"layers"``), else
        ``vmap`` or the loop.

        Raises:
            ValueError: if the loss on the first sample does not depend on some selected
                parameters (checked on the first call only).
        """
        num, shape = inputs.shape[0], tuple(inputs.shape[1:])
        start, first = 0, None
        activation_bytes = self._activation_bytes.get(shape)
        if (chunk_size == "auto" and activation_bytes is None) or not self._connected:
            with SavedBytes(exclude=[*self.params.values(), *self.constants.values()]) as saved:
                first, loss = self._autograd_grad(loss_fn, inputs[0], targets[0])
            activation_bytes = self._activation_bytes[shape] = saved.total
            start = 1
            yield slice(0, 1), {name: g.unsqueeze(0) for name, g in first.items()}, loss[None]
        if start == num:
            return
        if randomness != "error" and self.engine == "layers":
            self.engine = "vmap"  # active dropout: only vmap controls the masks per sample
        size = self._chunk_size(chunk_size, num, activation_bytes)
        if self.engine == "layers" and size > 1 and not self._layers_checked:
            if first is None:
                first, _ = self._autograd_grad(loss_fn, inputs[0], targets[0])
            self._check_layers(loss_fn, inputs, targets, first)
            size = self._chunk_size(chunk_size, num, activation_bytes)
        self.largest_chunk = max(self.largest_chunk, min(size, num - start))
        loop = self.engine == "loop" or (size == 1 and randomness == "error")
        if self.engine == "layers" and not loop:
            for begin in range(start, num, size):
                samples = slice(begin, min(begin + size, num))
                yield samples, *self._layer_grads(loss_fn, inputs[samples], targets[samples])
            return
        batched = batched_gradients(self.sample_loss(loss_fn), randomness)
        for begin in range(start, num, size):
            samples = slice(begin, min(begin + size, num))
            if not loop:
                try:
                    block, losses = batched(self.params, inputs[samples], targets[samples])
                except RuntimeError as error:
                    if randomness == "same" or not loop_avoids(error):
                        raise
                    self.engine, loop = "loop", True
                    warn_loop_fallback(error)
                else:
                    yield samples, block, losses.detach()
                    continue
            yield (
                samples,
                *loop_chunk(
                    self.sample_loss(loss_fn), self.params, inputs[samples], targets[samples]
                ),
            )

    def _layer_grads(
        self, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat per-sample gradients ``(c, P)`` and losses ``(c,)`` of a chunk, through hooks."""
        flat = torch.empty(inputs.shape[0], self.layout.size, dtype=self.dtype, device=self.device)
        out = self.layout.unflatten(flat)
        losses = self._layers(lambda x: self(self.params, x), loss_fn, inputs, targets, out=out)
        return flat, losses

    def _chunk_size(self, chunk_size: ChunkSize, num: int, activation_bytes: int | None) -> int:
        """:func:`resolve_chunk_size` for this model's engine."""
        return resolve_chunk_size(
            chunk_size,
            num,
            self.layout.size,
            self.dtype,
            self.device,
            activation_bytes=activation_bytes,
            budget_bytes=self.memory_budget,
            held_params=self.held_params,
            batched_backward=self.engine == "layers",
        )

    def _check_layers(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        reference: dict[str, torch.Tensor],
    ) -> None:
        """Keep the layer hooks only if they give ``reference``, the first sample's gradient.

        Hooks see only what passes through the covered layers' ``forward``; a parameter used
        elsewhere too, or samples that interact, would give wrong gradients, not an error. The
        first two samples run as one batch, so that an interaction between them shows.
        """
        pair = slice(0, min(2, inputs.shape[0]))
        try:
            got, _ = self._layer_grads(loss_fn, inputs[pair], targets[pair])
        except (HookMismatch, RuntimeError):
            self.engine = "vmap"
            return
        expected = self.layout.flatten({n: g.unsqueeze(0) for n, g in reference.items()})[0]
        difference = got[0] - expected
        tolerance = 10 * torch.finfo(self.dtype).eps ** 0.5 * expected.norm()
        self._layers_checked = True
        if not bool(difference.norm() <= tolerance):
            self.engine = "vmap"

    def _autograd_grad(
        self, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One sample's plain autograd gradient; the first call proves every parameter is used."""
        grads, loss = sample_gradient(
            self.sample_loss(loss_fn), self.params, x, y, require_all=not self._connected
        )
        self._connected = True
        return grads, loss

    def flat_grads(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> Iterator[GradientRows]:
        """Yield :class:`GradientRows`: flat ``(c, P)`` per-sample gradients, norms and losses."""
        for samples, block, losses in self._chunks(
            loss_fn, inputs, targets, chunk_size, randomness
        ):
            flat = block if torch.is_tensor(block) else self.layout.flatten(block)
            yield GradientRows(samples, flat, flat.norm(dim=-1), losses)


__all__ = ["Engine", "FunctionalModel"]
