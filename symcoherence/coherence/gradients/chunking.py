r"""How many samples one batched per-sample-gradient call takes: chunks within a memory budget.

A chunk of ``c`` samples holds their activations and their gradients at once, beside what the
measurement already holds (the probes' ``N × P`` gradients). ``"auto"`` takes the largest chunk
that fits the budget (see :mod:`~symcoherence.coherence.gradients.memory`), from the activation
memory of one sample's forward (measured by :class:`SavedBytes` on the first sample) and the
parameter count (see :func:`resolve_chunk_size`): on the engines' measured costs, a larger batched
backward is never slower per sample, except a ``vmap`` wider than 8 on a CPU.

Example:
    >>> import torch
    >>> resolve_chunk_size("auto", 16, 1_000, torch.float32, torch.device("cpu"), budget_bytes=2**30)
    8
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

from symcoherence.coherence.gradients.memory import DEFAULT_MEMORY_FRACTION, resolve_memory_budget

ChunkSize = int | Literal["auto"] | None

# One sample of a vmapped chunk costs about this many times the activations its forward
# saves for the backward (measured on the small U-Net and FNO presets: 2.2 and 1.6), plus its
# gradient three times (the per-parameter gradients, their flat copy and one product with it).
_AUTO_ACTIVATION_FACTOR = 2
_AUTO_GRADIENT_COPIES = 3
# A chunk through layer hooks (one batched backward) holds its activations and the layer inputs
# that the hooks keep (1.6 A per sample, measured on the small U-Net at 64²), and each sample's
# gradient in one flat row plus one product with it.
_LAYERS_ACTIVATION_FACTOR = 1.6
_LAYERS_GRADIENT_COPIES = 2
# Besides the chunk, an exact measurement holds the probes' N gradients and one solved copy.
_HELD_GRADIENT_COPIES = 2
# At most this many samples per vmapped chunk on CPU, where very wide vmapped kernels lose to a
# loop, and this many per chunk elsewhere ...
_AUTO_CHUNK_CPU_CAP = 8
_AUTO_CHUNK_GPU_CAP = 256
# ... and on CPU, vmap over fewer samples than this loses to a plain loop (measured on the small
# U-Net and FNO presets at 64²), so smaller automatic chunks fall back to the loop.
_AUTO_CHUNK_CPU_MIN = 4


class SavedBytes:
    """Context manager counting the bytes that autograd saves for the backward inside it.

    Each distinct storage counts once; storages of ``exclude`` (parameters, buffers: not
    per-sample memory) do not count. After the block, ``total`` holds the sum, the activation
    memory ``A`` of one forward that :func:`resolve_chunk_size` budgets.

    Args:
        exclude: tensors whose storages are not counted.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._skip = {tensor.untyped_storage().data_ptr() for tensor in exclude}
        self._sizes: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda packed: packed)
        self.total = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, torch.nn.Parameter):  # e.g. the weights FSDP gathers for a forward
            return tensor
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._skip:
            self._sizes[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._hooks.__exit__(*exc_info)
        self.total = sum(self._sizes.values())


def resolve_chunk_size(
    chunk_size: ChunkSize,
    num_samples: int,
    num_params: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    activation_bytes: int | None = None,
    budget_bytes: int | None = None,
    held_params: int | None = None,
    batched_backward: bool = False,
) -> int:
    r"""Samples per batched call: an explicit positive int, ``None`` (all at once) or ``"auto"``.

    ``"auto"`` takes the largest chunk that fits the budget ``B`` (``budget_bytes``; default: a
    quarter of the device's free memory). One sample of a vmapped chunk costs about

    .. math:: s = 2 A + 3 P b

    bytes, where ``A`` (``activation_bytes``) is what one sample's forward saves for the backward
    (measured by the caller on the first sample; ``0`` when not given), ``P`` the number of
    parameters and ``b`` the bytes per number: ``vmap``'s batched backward holds about twice the
    activations of a plain one, and the gradient exists per parameter, flattened and in one
    product. Through layer hooks (``batched_backward``: one plain batched backward) a sample
    costs ``s = 1.6 A + 2 P b`` (the gradient is written straight into its flat row). Besides the
    chunk the measurement holds ``h = 2 N P_h b`` (the ``N`` probe gradients and one solved copy;
    ``P_h`` = ``held_params``, default ``P``, fewer where gradients are projected), so

    .. math:: c = \min(⌊(B − h) / s⌋,\ N,\ \mathrm{cap}),

    with ``cap`` = 8 for ``vmap`` on CPU (wider vmapped kernels run no faster there; a vmapped
    chunk below 4 becomes 1) and 256 otherwise. A chunk of 1 (without dropout randomness) runs as
    a plain loop of ``torch.autograd.grad``, which beats a batched call of one sample.

    Args:
        chunk_size: ``"auto"``, a positive int, or ``None``.
        num_samples: ``N``, the samples of the call.
        num_params: ``P``.
        dtype: the gradients' real dtype (sets ``b``).
        device: where they are computed.
        activation_bytes: ``A``, for ``"auto"``.
        budget_bytes: ``B``, for ``"auto"`` (see :mod:`~symcoherence.coherence.gradients.memory`).
        held_params: ``P_h``, for ``"auto"``.
        batched_backward: whether the chunk runs through layer hooks rather than ``vmap``.

    Returns:
        The number of samples per chunk.

    Raises:
        ValueError: for anything but ``"auto"``, ``None`` or a positive int; with ``"auto"``, when
            not even one sample fits the budget beside what the measurement holds.

    Example:
        >>> cpu = torch.device("cpu")
        >>> resolve_chunk_size("auto", 16, 280_000, torch.float32, cpu,
        ...                    activation_bytes=11 * 2**20, budget_bytes=2**28, batched_backward=True)
        11
    """
    if chunk_size is None:
        return max(num_samples, 1)
    if chunk_size == "auto":
        if budget_bytes is None:
            budget_bytes = resolve_memory_budget(DEFAULT_MEMORY_FRACTION, device)
        itemsize = torch.empty((), dtype=dtype).element_size()
        on_cpu = torch.device(device).type == "cpu"
        held = _HELD_GRADIENT_COPIES * num_samples * (held_params or num_params) * itemsize
        activation_factor, gradient_copies = (
            (_LAYERS_ACTIVATION_FACTOR, _LAYERS_GRADIENT_COPIES)
            if batched_backward
            else (_AUTO_ACTIVATION_FACTOR, _AUTO_GRADIENT_COPIES)
        )
        per_sample = (
            activation_factor * (activation_bytes or 0) + gradient_copies * num_params * itemsize
        )
        if budget_bytes - held < per_sample:
            raise ValueError(_no_fit_message(budget_bytes, held, per_sample, num_samples))
        cap = _AUTO_CHUNK_CPU_CAP if on_cpu and not batched_backward else _AUTO_CHUNK_GPU_CAP
        size = int(min((budget_bytes - held) // max(per_sample, 1), cap))
        if on_cpu and not batched_backward and size < _AUTO_CHUNK_CPU_MIN:
            return 1
        return min(size, max(num_samples, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, None or 'auto', got {chunk_size!r}")
    return chunk_size


def _no_fit_message(budget: int, held: float, per_sample: float, num_samples: int) -> str:
    """The error for a measurement that does not fit its memory budget even one sample at a time."""
    mib = 2**20
    return (
        f"the measurement does not fit its memory budget: max_memory allows {budget / mib:.0f} MiB, "
        f"but the {num_samples} probe gradients take {held / mib:.0f} MiB and one more sample "
        f"{per_sample / mib:.0f} MiB; raise max_memory (bytes, or a larger fraction of the free "
        "memory), measure on random projections of the gradients (projection=Projection(dim=...)), "
        "or use fewer probes (probe_size)"
    )


__all__ = ["ChunkSize", "SavedBytes", "resolve_chunk_size"]
