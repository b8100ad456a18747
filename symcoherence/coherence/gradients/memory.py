r"""The memory a measurement may take: a budget in bytes, or a fraction of what the device has free.

``max_memory`` is either a number of bytes (an ``int``) or a fraction ``0 < f ≤ 1`` (a ``float``)
of the memory the device has available when the budget is resolved:

* CPU: ``MemAvailable`` of ``/proc/meminfo`` (what can be allocated without swapping), else the
  free physical pages;
* CUDA: the device's free memory less what training will take back at its own peak,
  ``free − (max_memory_reserved − memory_reserved)``, so that the firing fits beside the
  training step it runs between.

The default fraction, ``0.25``, leaves three quarters of what is free to the training beside the
measurement. On a machine with 20 GiB free that is 5 GiB: the small U-Net takes about 6.7 MiB per
sample of a chunk at 32² and 19.6 MiB at 64² (``1.6 A + 2 P b``, with ``A`` = 2.8 and 10.9 MiB
of saved activations, ``P`` = 279k), so every chunk holds all probes (48 at the quickstart's
scale, 16 on the 64² presets): the chunks at which a batched backward on a CPU is fastest per
sample. A budget of a few hundred MiB already allows them.

Example:
    >>> import torch
    >>> resolve_memory_budget(2**30, torch.device("cpu"))
    1073741824
    >>> 0 < resolve_memory_budget(0.25, torch.device("cpu")) <= available_memory(torch.device("cpu"))
    True
"""

from __future__ import annotations

import math
import os
from numbers import Real

import torch

MemoryLimit = int | float

DEFAULT_MEMORY_FRACTION = 0.25


def check_max_memory(max_memory: object) -> None:
    """Raise ``ValueError`` unless ``max_memory`` is a positive int (bytes) or a float in (0, 1]."""
    if isinstance(max_memory, bool) or not isinstance(max_memory, Real):
        raise ValueError(
            f"max_memory must be a number of bytes (an int, e.g. 4 * 2**30) or a fraction in "
            f"(0, 1] of the device's free memory (a float, e.g. 0.25), got {max_memory!r}"
        )
    if isinstance(max_memory, int):
        if max_memory < 1:
            raise ValueError(f"max_memory in bytes must be positive, got {max_memory}")
    elif not (0 < max_memory <= 1 and math.isfinite(max_memory)):
        raise ValueError(
            f"max_memory as a fraction of the free memory must lie in (0, 1], got {max_memory!r}; "
            "give an int for a number of bytes"
        )


def _cpu_available() -> int:
    """``MemAvailable`` from ``/proc/meminfo``, else free physical pages (bytes)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no way to ask: do not limit
        return 2**62


def available_memory(device: torch.device | str) -> int:
    """Bytes the device can still give a measurement (see the module docs)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reclaim = torch.cuda.max_memory_reserved(device) - torch.cuda.memory_reserved(device)
        return max(int(free - reclaim), 0)
    if device.type == "cpu":
        return _cpu_available()
    return 2**62  # other accelerators: no portable reading; an explicit max_memory applies


def resolve_memory_budget(max_memory: MemoryLimit, device: torch.device | str) -> int:
    """``max_memory`` in bytes: an int as it is, a fraction of :func:`available_memory`."""
    check_max_memory(max_memory)
    if isinstance(max_memory, int):
        return max_memory
    return max(int(max_memory * available_memory(device)), 1)


__all__ = [
    "DEFAULT_MEMORY_FRACTION",
    "MemoryLimit",
    "available_memory",
    "check_max_memory",
    "resolve_memory_budget",
]
