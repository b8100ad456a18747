r"""How many samples one batched per-sample-gradient call takes: memory-aware chunk sizes.

A chunk of ``c`` samples holds their activations and their gradients at once, so ``"auto"`` sizes
it from the activation memory of one sample's forward (measured by :class:`SavedBytes` on the
first sample) and from the parameter count, within a budget tied to the gradients the call
returns (see :func:`resolve_chunk_size`).

Example:
    >>> import torch
    >>> resolve_chunk_size("auto", 16, 1_000, torch.float32, torch.device("cpu"))
    8
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

ChunkSize = int | Literal["auto"] | None

# An automatic chunk's working memory may take the bytes of the call's N exact gradients, clamped
# to these bounds per device type (below the floor memory is not worth a slower loop) ...
_AUTO_CHUNK_FRACTION = 1.0
_AUTO_CHUNK_BYTES = {"cpu": (16 * 2**20, 256 * 2**20), "other": (2**30, 4 * 2**30)}
# ... where one sample of a vmapped chunk costs about this many times the activations its forward
# saves for the backward (measured on the small U-Net and FNO presets: 2.2 and 1.6), plus its
# gradient three times (the per-parameter gradients, their flat copy and one product with it).
_AUTO_ACTIVATION_FACTOR = 2
_AUTO_GRADIENT_COPIES = 3
# A chunk through layer hooks (one batched backward) holds its activations and the layer inputs
# that the hooks keep (1.6 A per sample, measured on the small U-Net at 64²), and each sample's
# gradient in one flat row plus one product with it.
_LAYERS_ACTIVATION_FACTOR = 1.6
_LAYERS_GRADIENT_COPIES = 2
# At most this many samples per chunk on CPU, where very wide vmapped kernels lose to a loop, ...
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
    budget_params: int | None = None,
    batched_backward: bool = False,
) -> int:
    r"""Samples per batched call: an explicit positive int, ``None`` (all at once) or ``"auto"``.

    ``"auto"`` sizes a chunk by memory. One sample of a vmapped chunk costs about

    .. math:: s = 2 A + 3 P b

    bytes, where ``A`` (``activation_bytes``) is what one sample's forward saves for the backward
    (measured by the caller on the first sample; ``0`` when not given), ``P`` the number of
    parameters and ``b`` the bytes per number: ``vmap``'s batched backward holds about twice the
    activations of a plain one, and the gradient exists per parameter, flattened and in one
    product. Through layer hooks (``batched_backward``: one plain batched backward) a sample
    costs ``s = 1.6 A + 2 P b`` (the gradient is written straight into its flat row). The
    chunk's working memory may take what ``N`` gradients of ``P_B`` (``budget_params``, default
    ``P``) parameters take,

    .. math:: B = \mathrm{clamp}(N P_B b,\ B_{min},\ B_{max}),

    with ``[B_min, B_max]`` = [16 MiB, 256 MiB] on CPU and [1 GiB, 4 GiB] on other devices, so
    that an exact engine, which keeps the ``N × P`` gradient matrix of the probes, peaks near
    twice that matrix: ``0.25·K·N·P·b`` for the ``K = 8`` elements of D4. The chunk is then
    ``⌊B / s⌋`` clamped to ``[1, min(N, cap)]`` with ``cap`` = 256, or 8 for ``vmap`` on CPU
    (wider vmapped kernels run no faster there), where a vmapped chunk below 4 also becomes 1.
    A chunk of 1 (without dropout randomness) runs as a plain loop of ``torch.autograd.grad``,
    which beats a batched call of one sample.

    Args:
        chunk_size: ``"auto"``, a positive int, or ``None``.
        num_samples: ``N``, the samples of the call.
        num_params: ``P``.
        dtype: the gradients' real dtype (sets ``b``).
        device: where they are computed.
        activation_bytes: ``A``, for ``"auto"``.
        budget_params: ``P_B``, for ``"auto"``: the model's parameter count where the gradients
            are projected to fewer numbers than it has.
        batched_backward: whether the chunk runs through layer hooks rather than ``vmap``.

    Returns:
        The number of samples per chunk.

    Raises:
        ValueError: for anything but ``"auto"``, ``None`` or a positive int.

    Example:
        >>> cpu = torch.device("cpu")
        >>> resolve_chunk_size("auto", 16, 280_000, torch.float32, cpu, activation_bytes=11 * 2**20)
        1
        >>> resolve_chunk_size("auto", 16, 1_000, torch.float32, cpu, activation_bytes=2**16)
        8
    """
    if chunk_size is None:
        return max(num_samples, 1)
    if chunk_size == "auto":
        itemsize = torch.empty((), dtype=dtype).element_size()
        on_cpu = torch.device(device).type == "cpu"
        low, high = _AUTO_CHUNK_BYTES["cpu" if on_cpu else "other"]
        reference = num_params if budget_params is None else budget_params
        budget = min(max(_AUTO_CHUNK_FRACTION * num_samples * reference * itemsize, low), high)
        activation_factor, gradient_copies = (
            (_LAYERS_ACTIVATION_FACTOR, _LAYERS_GRADIENT_COPIES)
            if batched_backward
            else (_AUTO_ACTIVATION_FACTOR, _AUTO_GRADIENT_COPIES)
        )
        per_sample = (
            activation_factor * (activation_bytes or 0) + gradient_copies * num_params * itemsize
        )
        cap = _AUTO_CHUNK_CPU_CAP if on_cpu and not batched_backward else _AUTO_CHUNK_GPU_CAP
        size = int(max(1, min(budget // max(per_sample, 1), cap)))
        if on_cpu and not batched_backward and size < _AUTO_CHUNK_CPU_MIN:
            return 1
        return min(size, max(num_samples, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, None or 'auto', got {chunk_size!r}")
    return chunk_size


__all__ = ["ChunkSize", "SavedBytes", "resolve_chunk_size"]
