"""Chunks of flat per-sample gradients, as every gradient source yields them.

Example:
    >>> import torch
    >>> chunks = [GradientRows(slice(0, 1), torch.ones(1, 2), torch.ones(1), torch.zeros(1)),
    ...           GradientRows(slice(1, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2))]
    >>> gather_rows(chunks, 3, 2, torch.float32, torch.device("cpu")).rows.tolist()
    [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch


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
