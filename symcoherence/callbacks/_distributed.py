"""Collectives the monitor uses under data-parallel training: split the work, agree, gather.

Every function here is entered by **every** rank (or is rank-local and collective-free), so a rank
that failed still takes part in the collectives and no rank waits forever. Outside an initialized
process group (single-process training) the functions degrade to their one-rank answers.

Example:
    >>> from symcoherence.callbacks._distributed import split_evenly
    >>> split_evenly(["e", "r", "r2", "r3", "s"], rank=1, world_size=2)
    ['r3', 's']
    >>> split_evenly(["e"], rank=1, world_size=2)
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def split_evenly(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Contiguous share of ``items`` for ``rank``: shares differ in size by at most one.

    Concatenating the shares of ranks ``0 … world_size − 1`` restores ``items`` in order, which
    is what lets gathered per-element results be reassembled without any bookkeeping.

    Args:
        items: the work to split (e.g. group element names).
        rank: this process's rank, ``0 ≤ rank < world_size``.
        world_size: number of processes.

    Returns:
        ``items[start:stop]`` for this rank (empty when there are more ranks than items).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"expected 0 <= rank < world_size with world_size >= 1, got rank={rank}, "
            f"world_size={world_size}"
        )
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return list(items[start:stop])


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank, in rank order; ``[obj]`` without a group.

    Tensors inside ``obj`` should be on the CPU so that every backend can pickle them.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_ranks_agree(flag: bool, device: torch.device | str = "cpu") -> bool:
    """``True`` only if ``flag`` is ``True`` on every rank (an ``all_reduce`` of the minimum).

    Args:
        flag: this rank's vote.
        device: where the one-element tensor lives (a CUDA device for the NCCL backend).
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return bool(flag)
    vote = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MIN)
    return bool(vote.item())


def all_ranks_max(value: int, device: torch.device | str = "cpu") -> int:
    """The largest ``value`` over all ranks (an ``all_reduce`` of the maximum)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return int(value)
    vote = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return int(vote.item())
