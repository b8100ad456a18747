r"""Per-sample loss gradients with ``torch.func``: ``a_n = ∇θ loss(f_θ(x_n), y_n)`` for every ``n``.

The model is called functionally (``functional_call``) on a detached copy of its parameters and
buffers. Where every selected parameter belongs to a standard layer (``nn.Linear``,
``nn.Conv2d``, ``nn.GroupNorm``, ``nn.LayerNorm``, eval-mode ``nn.BatchNorm1d/2d``), one batched
backward with layer hooks gives a chunk's per-sample gradients
(:mod:`~symcoherence.coherence.layer_grads`, checked once against plain autograd); otherwise
``vmap(grad(·))`` batches them. Chunks are sized so that their memory (the activations and
gradients of the chunk's samples, measured on the first sample) stays within what the returned
gradients take (see :func:`~symcoherence.coherence.chunking.resolve_chunk_size`), and so that the
batched path is never slower than a Python loop on CPU. Complex parameters (spectral layers) are
flattened as pairs of real numbers, so the flat inner product is the real Euclidean one,
``⟨b, a⟩ = Σ Re(b̄ a)``.

Models that ``vmap`` cannot batch (an in-place write of per-sample values into a tensor created in
``forward``, an operator without a batching rule, ``.item()`` or data-dependent control flow, a
custom ``torch.autograd.Function`` without ``setup_context`` or a vmap rule) fall back, with one
warning, to a per-sample loop of ``torch.autograd.grad``. A selected parameter that the loss does
not depend on (an unused head, or a layer that convolves with a filter cached in eval mode) is
reported as an error rather than given silent zero gradients.

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

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from symcoherence.coherence.chunking import ChunkSize, SavedBytes, resolve_chunk_size
from symcoherence.coherence.layer_grads import HookMismatch, LayerGradients
from symcoherence.coherence.layout import ParameterLayout

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ParameterFilter = Callable[[str, nn.Parameter], bool] | Iterable[str] | None
Randomness = Literal["error", "different", "same"]
Engine = Literal["layers", "vmap", "loop"]

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


def _plain(tensor: torch.Tensor) -> torch.Tensor:
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
    """``{name: parameter}`` chosen by a filter (see :class:`FunctionalModel`), in model order."""
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


class FunctionalModel:
    """A model called as a pure function of a (selected) parameter dict.

    The first gradient computation checks, with one plain autograd pass on its first sample, that
    the loss depends on every selected parameter. Per-sample gradients come from layer hooks where
    they cover the model (:mod:`~symcoherence.coherence.layer_grads`; kept only if they reproduce
    that first gradient), else from ``vmap``; where ``vmap`` cannot batch the model either, it
    switches, with one warning, to a per-sample loop of ``torch.autograd.grad`` for this and
    every later call. Modules are never hashed inside ``torch.func`` transforms (tied parameters are
    resolved once, up front), so modules whose ``__hash__`` reads tensor data work.

    Args:
        model: the module; it is never modified.
        parameter_filter: ``None`` (all parameters with ``requires_grad``), a callable
            ``(name, parameter) -> bool``, or a list of parameter names.
        budget_params: the parameter count whose ``N`` gradients set the memory budget of
            automatic chunks (see :func:`~symcoherence.coherence.chunking.resolve_chunk_size`);
            default: the selected ``P``.
        layer_hooks: try layer hooks before ``vmap`` (``False``: ``vmap`` or the loop only).

    Attributes:
        params: the selected parameters, detached ``{name: tensor}``.
        originals: the same parameters as the model holds them (for optimizer-state look-ups).
        constants: the other parameters and the buffers, detached ``{name: tensor}``.
        layout: their :class:`~symcoherence.coherence.layout.ParameterLayout` (``layout.size``
            is ``P``).
        device: the device of the selected parameters.
        dtype: their real dtype (``float32`` for ``complex64`` parameters).
        engine: ``"layers"``, ``"vmap"`` or ``"loop"``: how the next chunk will be computed.
    """

    def __init__(
        self,
        model: nn.Module,
        parameter_filter: ParameterFilter = None,
        *,
        budget_params: int | None = None,
        layer_hooks: bool = True,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        chosen = select_parameters(model, parameter_filter)
        self.originals = chosen
        self.params = {n: _plain(p) for n, p in chosen.items()}
        self.constants = {n: _plain(p) for n, p in model.named_parameters() if n not in chosen}
        self.constants.update({n: _plain(b) for n, b in model.named_buffers()})
        self.layout = ParameterLayout(self.params)
        self.budget_params = self.layout.size if budget_params is None else budget_params
        first = next(iter(self.params.values()))
        self.device = first.device
        self.dtype = first.real.dtype if first.is_complex() else first.dtype
        self._aliases = _tied_aliases(model)
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
        loop = self.engine == "loop" or (size == 1 and randomness == "error")
        if self.engine == "layers" and not loop:
            for begin in range(start, num, size):
                samples = slice(begin, min(begin + size, num))
                yield samples, *self._layer_grads(loss_fn, inputs[samples], targets[samples])
            return
        batched = vmap(
            grad_and_value(self.sample_loss(loss_fn)), in_dims=(None, 0, 0), randomness=randomness
        )
        for begin in range(start, num, size):
            samples = slice(begin, min(begin + size, num))
            if not loop:
                try:
                    block, losses = batched(self.params, inputs[samples], targets[samples])
                except RuntimeError as error:
                    if randomness == "same" or not _loop_avoids(error):
                        raise
                    self._switch_to_loop(error)
                    loop = True
                else:
                    yield samples, block, losses.detach()
                    continue
            parts, losses = zip(
                *(
                    self._autograd_grad(loss_fn, x, y)
                    for x, y in zip(inputs[samples], targets[samples], strict=True)
                ),
                strict=True,
            )
            block = {name: torch.stack([p[name] for p in parts]) for name in parts[0]}
            yield samples, block, torch.stack(losses)

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
            budget_params=self.budget_params,
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

    def _switch_to_loop(self, error: RuntimeError) -> None:
        """Use the per-sample loop from now on, and say why, once."""
        self.engine = "loop"
        warnings.warn(
            f"vmap cannot batch this model's per-sample gradients ({type(error).__name__}: "
            f"{error}); falling back to a per-sample loop; pass chunk_size=1 to choose it "
            "directly",
            stacklevel=3,
        )

    def _autograd_grad(
        self, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One sample's gradient ``{name: (*shape)}`` and loss with plain ``torch.autograd.grad``.

        The first call raises if the loss does not depend on some parameters; later calls give
        zeros for parameters that this sample's loss does not reach.
        """
        leaves = {name: p.detach().requires_grad_() for name, p in self.params.items()}
        loss = self.sample_loss(loss_fn)(leaves, x, y)
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        else:
            grads = (None,) * len(leaves)
        if not self._connected:
            unused = [name for name, g in zip(leaves, grads, strict=True) if g is None]
            if unused:
                raise ValueError(_unused_message(unused, list(leaves)))
            self._connected = True
        grads = {
            name: torch.zeros_like(leaf) if g is None else g
            for (name, leaf), g in zip(leaves.items(), grads, strict=True)
        }
        return grads, loss.detach()

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

    def flat_grad_matrix(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> GradientRows:
        """All flat per-sample gradients ``(N, P)``, their norms and losses, chunk by chunk."""
        blocks = self.flat_grads(loss_fn, inputs, targets, chunk_size, randomness)
        return gather_rows(blocks, inputs.shape[0], self.layout.size, self.dtype, self.device)


class GradientRows(NamedTuple):
    """One chunk of flat per-sample gradients.

    Attributes:
        samples: which samples of the call the rows are.
        rows: the gradients as rows ``(c, width)`` (``width`` = ``P``, or ``d`` when projected).
        norms: ``(c,)`` Euclidean norms of the unprojected, unscaled gradients (``rows.norm(-1)``
            for exact gradients; see :mod:`~symcoherence.coherence.projection` otherwise).
        losses: ``(c,)`` the per-sample losses whose gradients the rows are (detached).
    """

    samples: slice
    rows: torch.Tensor
    norms: torch.Tensor
    losses: torch.Tensor


def gather_rows(
    blocks: Iterable[GradientRows],
    num: int,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> GradientRows:
    """Gather chunks of rows into the rows of all ``num`` samples (``(num, width)`` and ``(num,)``)."""
    matrix = torch.empty(num, width, dtype=dtype, device=device)
    norms = torch.empty(num, dtype=dtype, device=device)
    losses = torch.empty(num, dtype=dtype, device=device)
    for samples, rows, row_norms, row_losses in blocks:
        matrix[samples], norms[samples], losses[samples] = rows, row_norms, row_losses
    return GradientRows(slice(0, num), matrix, norms, losses)


def _tied_aliases(model: nn.Module) -> dict[str, str]:
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


def _loop_avoids(error: RuntimeError) -> bool:
    """Whether ``error`` comes from a ``torch.func`` transform that a plain autograd loop avoids."""
    message = str(error)
    return "random" not in message and any(part in message for part in _TRANSFORM_ONLY_ERRORS)


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
) -> dict[str, torch.Tensor] | torch.Tensor:
    r"""Per-sample gradients ``a_n = ∇θ loss(f_θ(x_n), y_n)``, ``n = 1..N``.

    Computed as ``vmap(grad(θ ↦ loss(f_θ(x), y)))`` with ``functional_call`` on detached
    parameters and buffers; the model and its statistics are left untouched, and outer
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
        fmodel = FunctionalModel(model, parameter_filter)
        inputs, targets = _plain(inputs), _plain(targets)
        if flatten:
            return fmodel.flat_grad_matrix(loss_fn, inputs, targets, chunk_size, randomness).rows
        blocks = [
            block
            for _, block in fmodel.grad_blocks(loss_fn, inputs, targets, chunk_size, randomness)
        ]
        return {name: torch.cat([b[name] for b in blocks]) for name in fmodel.layout.names}


__all__ = [
    "FunctionalModel",
    "GradientRows",
    "gather_rows",
    "per_sample_grads",
    "select_parameters",
]
