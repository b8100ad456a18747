r"""``TrajectoryDataModule``: one-step training pairs cut from the trajectories of any data source.

The source (:class:`~symcoherence.data.TrajectorySource`: simulated Navier–Stokes or shallow-water
trajectories, an HDF5 file, arrays in memory) says what the data is and how the symmetry groups act
on it; this pipeline makes, loads, splits, normalizes and serves it. ``prepare_data`` makes the
data (generation into the HDF5 cache for simulated sources, a no-op when a valid file exists) and
``setup`` loads it.

Samples are ``(x_t, x_{t+1})`` with an optional history: the input stacks frames
``t − history + 1 … t`` along channels (field type ``frame_field_type.repeat(history)``), the target
is frame ``t + 1``. Trajectories (never individual frames) are split into train/val/test with a
permutation seeded by ``split_seed``, so no trajectory leaks between splits.

**Normalization commutes with the group.** Each *field* gets one scale, computed on the training
split: a vector's two components share one scale (the RMS over both), so do a tensor's four;
pseudoscalars, vectors and tensors are not mean-subtracted (a mean would break their sign flips
under reflections), and only scalars are centred (a constant is invariant under every grid
symmetry). Hence ``normalize(g·x) = g·normalize(x)``
for every element of a rotation/reflection/shift group.

**Augmentation** (optional, training split only) applies a random element of ``augment_group`` to
each sample through :meth:`~symcoherence.groups.Group.act_pair`; the element is drawn from a
``torch.Generator`` seeded by ``(augment_seed, sample index, visit count)``, so a run with
``num_workers=0`` is reproducible.

Example:
    >>> import torch
    >>> from symcoherence.data import ArraySource
    >>> source = ArraySource(torch.randn(10, 5, 1, 8, 8), ["pseudoscalar"], symmetry_group="D4")
    >>> data = TrajectoryDataModule(source, history=2)
    >>> inputs, targets = data.probe_batch(1)
    >>> inputs.shape, targets.shape, data.field_type
    (torch.Size([1, 2, 8, 8]), torch.Size([1, 1, 8, 8]), FieldType(['pseudoscalar', 'pseudoscalar']))
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from symcoherence.data.source import TrajectorySource, check_integer
from symcoherence.groups import FieldType, Group, resolve_group
from symcoherence.groups.field_types import KIND_CHANNELS


class _Pairs(Dataset):
    """One-step pairs of a subset of trajectories, optionally augmented."""

    def __init__(self, frames, history, field_type, target_field_type, group=None, seed=0):
        self.frames, self.history = frames, history
        self.field_type, self.target_field_type = field_type, target_field_type
        self.group, self.seed = group, seed
        self.per_trajectory = frames.shape[1] - history
        self.visits: dict[int, int] = {}

    def __len__(self) -> int:
        return self.frames.shape[0] * self.per_trajectory

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        trajectory, start = divmod(index, self.per_trajectory)
        window = self.frames[trajectory, start : start + self.history]
        return window.flatten(0, 1), self.frames[trajectory, start + self.history]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.pair(index)
        if self.group is None:
            return inputs, targets
        visit = self.visits.get(index, 0)
        self.visits[index] = visit + 1
        generator = torch.Generator().manual_seed(hash((self.seed, index, visit)) & (2**62 - 1))
        element = self.group.sample(1, generator)[0]
        return self.group.act_pair(
            element, inputs, targets, self.field_type, self.target_field_type
        )


class TrajectoryDataModule(L.LightningDataModule):
    """One-step pairs from the trajectories of a source (see the module docstring).

    Args:
        source: where the trajectories come from, e.g.
            :class:`~symcoherence.data.NavierStokesSource` ``(n=32)``,
            :class:`~symcoherence.data.SphericalShallowWaterSource`,
            :class:`~symcoherence.data.HDF5Source` or :class:`~symcoherence.data.ArraySource`.
        history: input frames per sample (stacked along channels).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of trajectories for validation.
        test_fraction: fraction of trajectories for testing.
        split_seed: seed of the trajectory permutation that makes the splits.
        augment_group: group whose random elements augment training samples (``"default"``: the
            source's ``diagnostic_group``; ``"D4"``, ``"C4"``, a JSON spec or a Group), or ``None``.
        augment_seed: seed of the augmentation draws.
        normalize: scale fields as described in the module docstring.
        cache_dir: directory of the HDF5 trajectory cache (for sources that generate data).
        generation_device: torch device of the simulation (e.g. ``"cuda"``).
        generation_batch: trajectories simulated per batch (and per cache chunk).
        progress: show a progress bar while generating.

    Attributes:
        path: the source's file once :meth:`prepare_data` ran (``None`` for in-memory data).

    Raises:
        TypeError: if ``source`` is not a :class:`~symcoherence.data.TrajectorySource`.
        ValueError: for a bad history, batch size or split, or trajectories too short for
            ``history`` or too few to leave training data, before anything is generated.
    """

    def __init__(
        self,
        source: TrajectorySource,
        *,
        history: int = 1,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.125,
        test_fraction: float = 0.125,
        split_seed: int = 0,
        augment_group: Group | str | dict | None = None,
        augment_seed: int = 0,
        normalize: bool = True,
        cache_dir: str = "./data_cache",
        generation_device: str = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ):
        super().__init__()
        if not isinstance(source, TrajectorySource):
            raise TypeError(
                "source must be a TrajectorySource, e.g. NavierStokesSource(n=32), "
                "SphericalShallowWaterSource(), HDF5Source('file.h5') or ArraySource(data, "
                f"['vector']); got {type(source).__name__}. In a config, give it as "
                "source: {class_path: symcoherence.data.NavierStokesSource, init_args: {...}}"
            )
        for name, value, least in (
            ("history", history, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("generation_batch", generation_batch, 1),
        ):
            check_integer(type(self).__name__, name, value, least)
        if not (
            0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                f"val_fraction and test_fraction must be in [0, 1) and sum to < 1 so that training "
                f"data remains; got {val_fraction} and {test_fraction}"
            )
        count, frames = source.shape[:2]
        if frames <= history:
            raise ValueError(
                f"num_frames = {frames} leaves no target for history = {history}; "
                f"record at least {history + 1} frames"
            )
        if count - round(val_fraction * count) - round(test_fraction * count) < 1:
            raise ValueError(
                f"{count} trajectories leave none for training with val_fraction={val_fraction} "
                f"and test_fraction={test_fraction}; generate more trajectories"
            )
        self.source = source
        self.history, self.batch_size, self.num_workers = history, batch_size, num_workers
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed, self.augment_seed, self.normalize = split_seed, augment_seed, normalize
        self.augment_group = resolve_group(augment_group, default=source.diagnostic_group)
        self.cache_dir = cache_dir
        self.generation_device, self.generation_batch = generation_device, generation_batch
        self.progress = progress
        self.path: Path | None = None
        self.splits: dict[str, torch.Tensor] = {}
        self.scale: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None

    # ------------------------------------------------------------------ declared types
    @property
    def frame_field_type(self) -> FieldType:
        """Field type of one frame (the source's ``field_type``)."""
        return self.source.field_type

    @property
    def field_type(self) -> FieldType:
        """Input field type: ``frame_field_type.repeat(history)``."""
        return self.frame_field_type.repeat(self.history)

    @property
    def target_field_type(self) -> FieldType:
        """Target field type: one frame."""
        return self.frame_field_type

    @property
    def symmetry_group(self) -> Group | None:
        """The source's full admissible group (every symmetry of the data), or ``None``."""
        return self.source.symmetry_group

    @property
    def diagnostic_group(self) -> Group | None:
        """The source's small subgroup that diagnostics measure by default, or ``None``."""
        return self.source.diagnostic_group

    @property
    def in_channels(self) -> int:
        """Input channels ``history · C``."""
        return self.field_type.num_channels

    @property
    def out_channels(self) -> int:
        """Target channels ``C``."""
        return self.frame_field_type.num_channels

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        """Make the source's data (generate it into ``cache_dir`` unless a valid file exists)."""
        self.path = self.source.prepare(
            self.cache_dir,
            device=self.generation_device,
            generation_batch=self.generation_batch,
            progress=self.progress,
        )

    def setup(self, stage: str | None = None) -> None:
        """Make (if needed), load, check, split by trajectory and normalize (idempotent)."""
        if self.splits:
            return
        self.prepare_data()
        data = torch.as_tensor(np.asarray(self.source.load(self.cache_dir)), dtype=torch.float32)
        if tuple(data.shape) != tuple(self.source.shape):
            raise ValueError(
                f"the source declared trajectories of shape {tuple(self.source.shape)} "
                f"(N, T, C, H, W) but loaded {tuple(data.shape)}"
            )
        count = data.shape[0]
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.split_seed))
        num_val, num_test = round(self.val_fraction * count), round(self.test_fraction * count)
        self.splits = {
            "train": order[num_val + num_test :].sort().values,
            "val": order[:num_val].sort().values,
            "test": order[num_val : num_val + num_test].sort().values,
        }
        self.scale, self.offset = self._statistics(data[self.splits["train"]])
        self.data = (data - self.offset[:, None, None]) / self.scale[:, None, None]

    def _statistics(self, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, offset)``: one scale per field, offsets only for scalars."""
        channels = self.out_channels
        scale, offset = torch.ones(channels), torch.zeros(channels)
        if not self.normalize:
            return scale, offset
        for kind, start in self.frame_field_type.blocks():
            width = KIND_CHANNELS[kind]
            block = train[:, :, start : start + width].double()
            if kind == "scalar":
                offset[start] = float(block.mean())
                block = block - block.mean()
            scale[start : start + width] = float(block.pow(2).mean().sqrt().clamp_min(1e-12))
        return scale, offset

    def denormalize(self, frames: torch.Tensor) -> torch.Tensor:
        """Undo the normalization on frames ``(..., C, H, W)``: ``x · scale + offset``."""
        shape = (-1, 1, 1)
        return frames * self.scale.view(shape).to(frames) + self.offset.view(shape).to(frames)

    def dataset(self, split: str, augment: bool = False) -> _Pairs:
        """Pairs of one split (``"train"``, ``"val"``, ``"test"``), augmented if asked."""
        if not self.splits:
            raise RuntimeError("call setup() before asking for data")
        if split not in self.splits:
            raise ValueError(f"split must be one of {list(self.splits)}, got {split!r}")
        group = self.augment_group if augment else None
        return _Pairs(
            self.data[self.splits[split]],
            self.history,
            self.field_type,
            self.target_field_type,
            group,
            self.augment_seed,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split, augment=split == "train"),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, optionally augmented training pairs."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation pairs in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test pairs in order."""
        return self._loader("test", shuffle=False)

    def probe_batch(
        self, n: int, split: str = "val", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` reproducible pairs from ``n`` distinct trajectories of ``split`` (no augmentation).

        Returns:
            ``(inputs, targets)`` of shapes ``(n, history·C, H, W)`` and ``(n, C, H, W)``.

        Raises:
            ValueError: if ``split`` has fewer than ``n`` trajectories (generate more trajectories
                or raise ``val_fraction``; probes from one trajectory would measure temporal
                correlation instead of generalization).
        """
        self.setup()
        pairs = self.dataset(split)
        available = pairs.frames.shape[0]
        if n > available:
            raise ValueError(
                f"probe_batch({n}) needs {n} distinct trajectories but the {split!r} split has "
                f"{available}; generate more trajectories or raise the split fraction"
            )
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(available, generator=generator)[:n].tolist()
        times = torch.randint(pairs.per_trajectory, (n,), generator=generator).tolist()
        samples = [
            pairs.pair(t * pairs.per_trajectory + s) for t, s in zip(chosen, times, strict=True)
        ]
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def rollout_batch(
        self, horizon: int, split: str = "val", max_trajectories: int = 8
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting inputs and true continuations for autoregressive validation.

        Uses the first ``min(max_trajectories, available)`` trajectories of ``split``: the input is
        the first ``history`` frames stacked along channels, the continuation the next ``horizon``
        frames, both normalized like the training pairs.

        Returns:
            ``(x0, trajectory)`` of shapes ``(B, history·C, H, W)`` and ``(B, horizon, C, H, W)``.

        Raises:
            ValueError: if trajectories have fewer than ``history + horizon`` frames.
        """
        self.setup()
        frames = self.data[self.splits[split][:max_trajectories]]
        if frames.shape[1] < self.history + horizon:
            raise ValueError(
                f"a rollout of {horizon} steps after {self.history} input frame(s) needs "
                f"trajectories of at least {self.history + horizon} frames; these have "
                f"{frames.shape[1]}. Lower the rollout horizon or record more frames"
            )
        x0 = frames[:, : self.history].flatten(1, 2)
        return x0, frames[:, self.history : self.history + horizon]
