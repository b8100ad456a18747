r"""The shared part of sources that convert someone else's file format: selection, reading, caching.

A :class:`ConvertedFileSource` reads a window of a large file lazily, with h5py slicing: the first
``num_trajectories`` trajectories and the frames ``first_frame, first_frame + frame_stride, …``
(at most ``num_frames`` of them), converted to this project's layout ``(N, T, C, H, W)`` (axis −1 is
``x``). With ``cache=True`` the converted window is written once into the HDF5 trajectory cache
(:mod:`symcoherence.data.cache`), chunk by chunk, under a key made of the file's identity (absolute
path, size, modification time), the selection and the conversion; later runs read the cache.
Changing the file, the selection or the conversion makes a new key, never a stale reuse.

Subclasses (:class:`~symcoherence.data.TheWellSource`, :class:`~symcoherence.data.PDEGymSource`)
validate the file in ``__post_init__``, call :meth:`ConvertedFileSource._select` with the file's
trajectory and frame counts, and implement :meth:`ConvertedFileSource._read` and
:meth:`ConvertedFileSource.conversion`.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from symcoherence.data.cache import CACHE_FORMAT, cache_path, cache_source, load_source
from symcoherence.data.source import TrajectorySource, check_integer


@dataclass(frozen=True, kw_only=True)
class ConvertedFileSource(TrajectorySource):
    """A window of trajectories read from a file in another project's layout (module docstring).

    Args:
        num_trajectories: how many trajectories to use, from the first (``None``: all).
        first_frame: index of the first frame used.
        num_frames: how many frames to use (``None``: as many as the file holds after
            ``first_frame`` at ``frame_stride``).
        frame_stride: use every ``frame_stride``-th frame (a longer time step).
        cache: write the converted window into the trajectory cache and read it from there.

    Raises:
        ValueError: for a selection that is empty, leaves fewer than two frames, or asks for more
            trajectories than the file holds.
    """

    cache_prefix: ClassVar[str] = "converted"

    num_trajectories: int | None = None
    first_frame: int = 0
    num_frames: int | None = None
    frame_stride: int = 1
    cache: bool = True

    # ------------------------------------------------------------------ what a subclass provides
    @abstractmethod
    def _read(self, start: int, count: int) -> np.ndarray:
        """Trajectories ``start … start + count − 1`` of the window as ``(count, T, C, H, W)``."""

    @abstractmethod
    def conversion(self) -> dict[str, Any]:
        """Everything besides the selection that determines the converted data (for the key)."""

    # ------------------------------------------------------------------ selection
    def _select(self, available: int, frames: int, where: str) -> None:
        """Store the window: ``_count`` trajectories and the frame indices ``_frames``."""
        name = type(self).__name__
        check_integer(name, "first_frame", self.first_frame, 0)
        check_integer(name, "frame_stride", self.frame_stride, 1)
        for option in ("num_trajectories", "num_frames"):
            if getattr(self, option) is not None:
                check_integer(name, option, getattr(self, option), 1)
        count = available if self.num_trajectories is None else self.num_trajectories
        if count > available:
            raise ValueError(
                f"{name}: num_trajectories={count} but {where} holds {available} trajectories; "
                f"ask for at most {available}"
            )
        indices = list(range(self.first_frame, frames, self.frame_stride))
        if self.num_frames is not None:
            if self.num_frames > len(indices):
                raise ValueError(
                    f"{name}: num_frames={self.num_frames} but {where} holds {len(indices)} frames "
                    f"from frame {self.first_frame} at stride {self.frame_stride}; ask for at most "
                    f"{len(indices)}"
                )
            indices = indices[: self.num_frames]
        if len(indices) < 2:
            raise ValueError(
                f"{name}: a training pair needs two frames, but {where} holds {len(indices)} from "
                f"frame {self.first_frame} at stride {self.frame_stride} (of {frames}); lower "
                "first_frame or frame_stride"
            )
        object.__setattr__(self, "_count", count)
        object.__setattr__(self, "_frames", indices)

    @property
    def frame_slice(self) -> slice:
        """The frames used, as a slice of the file's time axis."""
        frames = self._frames  # type: ignore[attr-defined]
        return slice(frames[0], frames[-1] + 1, self.frame_stride)

    # ------------------------------------------------------------------ the cache
    def cache_config(self) -> dict[str, Any]:
        """The file's identity, the selection and the conversion: what the cache key hashes."""
        path = Path(self.path).resolve()  # type: ignore[attr-defined]
        status = path.stat()
        return {
            "source": type(self).__name__,
            "cache_format": CACHE_FORMAT,
            "file": {"path": str(path), "size": status.st_size, "mtime_ns": status.st_mtime_ns},
            "trajectories": self._count,  # type: ignore[attr-defined]
            "frames": self._frames,  # type: ignore[attr-defined]
            "field_type": self.field_type.to_list(),
            **self.conversion(),
        }

    def cache_path(self, cache_dir: str | os.PathLike) -> Path:
        """Where the converted window is cached under ``cache_dir``."""
        return cache_path(cache_dir, self.cache_config(), self.cache_prefix)

    def prepare(
        self,
        cache_dir: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ) -> Path:
        """Convert the window into ``cache_dir`` unless a valid cache file exists; return it.

        ``generation_batch`` trajectories are read and written at a time. Without ``cache``, the
        file itself is returned.
        """
        if not self.cache:
            return Path(self.path)  # type: ignore[attr-defined]
        return cache_source(
            self, cache_dir, self._read, chunk_size=generation_batch, progress=progress
        )

    def load(self, cache_dir: str | os.PathLike) -> np.ndarray:
        """The converted window ``(N, T, C, H, W)`` (call :meth:`prepare` first when caching)."""
        if not self.cache:
            return self._read(0, self._count)  # type: ignore[attr-defined]
        return load_source(self, cache_dir)

    @property
    def times(self) -> np.ndarray:
        """``(T,)`` times of the frames used (frame indices where the file stores none)."""
        return self._times  # type: ignore[attr-defined]
