"""``GeneratedTrajectoryDataModule``: trajectories a datamodule simulates itself, kept in the cache.

The shared base of :class:`~symcoherence.data.NavierStokesDataModule` and
:class:`~symcoherence.data.SphericalShallowWaterDataModule`. ``prepare_data`` finds or generates
the trajectories with :func:`~symcoherence.data.cache.ensure_cache`, ``load_trajectories`` reads the
validated file and ``setup`` splits and normalizes them
(:class:`~symcoherence.data.trajectories.TrajectoryDataModule`). A subclass provides

* ``config``: a JSON-serializable dict of every parameter that determines the data, with
  ``num_trajectories`` and ``num_frames`` among them; it is the cache key (pass it to ``__init__``);
* ``times``: the ``(num_frames,)`` recorded times;
* ``grid_shape``: ``(H, W)`` of one frame;
* ``cache_prefix``: the file-name prefix of its cache files (a class attribute);
* ``generate(start, count)``: trajectories ``start … start + count − 1`` as ``(count, T, C, H, W)``,
  deterministic in ``start`` (seed each trajectory from its index).

Example:
    >>> import tempfile
    >>> from symcoherence.groups import D4, FieldType
    >>> class Decay(GeneratedTrajectoryDataModule):
    ...     cache_prefix, grid_shape, times = "decay", (4, 4), np.array([0.0, 1.0, 2.0])
    ...     def generate(self, start, count):
    ...         amplitude = torch.arange(start, start + count, dtype=torch.float32) + 1
    ...         decay = torch.exp(-torch.as_tensor(self.times, dtype=torch.float32))
    ...         return (amplitude[:, None] * decay).view(count, 3, 1, 1, 1).expand(-1, -1, 1, 4, 4)
    >>> with tempfile.TemporaryDirectory() as root:
    ...     data = Decay(FieldType(["scalar"]), D4(), {"num_trajectories": 4, "num_frames": 3},
    ...                  cache_dir=root, progress=False, val_fraction=0.25, test_fraction=0.25)
    ...     data.setup()
    ...     name = data.path.name
    >>> name.startswith("decay-"), data.data.shape
    (True, torch.Size([4, 3, 1, 4, 4]))
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from symcoherence.data.cache import ensure_cache, load_trajectories
from symcoherence.data.trajectories import TrajectoryDataModule
from symcoherence.groups import FieldType, Group


class GeneratedTrajectoryDataModule(TrajectoryDataModule, metaclass=ABCMeta):
    """One-step pairs from trajectories generated into the HDF5 cache (see the module docstring).

    Args:
        frame_type: field type of one frame.
        symmetry_group: the dataset's declared group (default orbit for diagnostics).
        config: every parameter that determines the data (the cache key).
        cache_dir: directory of the HDF5 trajectory cache.
        generation_batch: trajectories per ``generate`` call (and per cache chunk).
        progress: show a progress bar while generating.
        **kwargs: :class:`~symcoherence.data.trajectories.TrajectoryDataModule` options
            (``history``, ``batch_size``, splits, ``augment_group``, ...).
    """

    cache_prefix: ClassVar[str]
    grid_shape: tuple[int, int]
    times: np.ndarray

    def __init__(
        self,
        frame_type: FieldType,
        symmetry_group: Group,
        config: dict[str, Any],
        cache_dir: str = "./data_cache",
        generation_batch: int = 8,
        progress: bool = True,
        **kwargs: Any,
    ):
        super().__init__(frame_type, symmetry_group, **kwargs)
        self.config = config
        self.cache_dir, self.progress = cache_dir, progress
        self.generation_batch = generation_batch
        self.path: Path | None = None

    @abstractmethod
    def generate(self, start: int, count: int) -> torch.Tensor:
        """Trajectories ``start … start + count − 1`` as ``(count, T, C, H, W)``."""

    def prepare_data(self) -> None:
        """Generate the trajectories into the cache unless a valid file exists."""
        config = self.config
        self.path = ensure_cache(
            self.cache_dir,
            config,
            self.generate,
            times=self.times,
            shape=(
                config["num_trajectories"],
                config["num_frames"],
                self.out_channels,
                *self.grid_shape,
            ),
            field_type=self.frame_type,
            group=self.symmetry_group,
            prefix=self.cache_prefix,
            chunk_size=self.generation_batch,
            progress=self.progress,
        )

    def load_trajectories(self) -> np.ndarray:
        """Read the validated cache (generating it first when needed)."""
        self.prepare_data()
        return load_trajectories(self.path, self.config).trajectories
