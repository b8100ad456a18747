"""Chunks of flat per-sample gradients, as every gradient source yields them.

Example:
    >>> import torch
    >>> chunks = [GradientRows(slice(0, 1), torch.ones(1, 2), torch.ones(1), torch.zeros(1)),
    ...           GradientRows(slice(1, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2))]
    >>> gather_rows(chunks, 3, 2, torch.float32, torch.device("cpu")).rows.tolist()
    [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from symcoherence.coherence.gradients.chunking import ChunkSize
    from symcoherence.coherence.gradients.layout import ParameterLayout
    from symcoherence.coherence.gradients.parameters import LossFn, Randomness


class GradientRows(NamedTuple):
    """One chunk of flat per-sample gradients.

    Attributes:
        samples: which samples of the call the rows are.
        rows: the gradients as rows ``(c, width)`` (``width`` = ``P``, or ``d`` when projected).
        norms: ``(c,)`` Euclidean norms of the unprojected, unscaled gradients (``rows.norm(-1)``
            for exact gradients; see :mod:`~symcoherence.coherence.gradients.projection`
            otherwise).
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


class GradientSource(ABC):
    """What yields per-sample gradient rows chunk by chunk (exact, projected, or sharded).

    A source defines ``flat_grads`` and the attributes ``layout`` (its columns), ``dtype`` and
    ``device``; :meth:`flat_grad_matrix` gathers all its chunks.
    """

    layout: ParameterLayout
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def flat_grads(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> Iterator[GradientRows]:
        """Yield the rows of each chunk of samples."""

    def flat_grad_matrix(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> GradientRows:
        """All rows ``(N, width)``, their norms and losses ``(N,)``, gathered chunk by chunk."""
        blocks = self.flat_grads(loss_fn, inputs, targets, chunk_size, randomness)
        return gather_rows(blocks, inputs.shape[0], self.layout.size, self.dtype, self.device)
