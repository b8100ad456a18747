r"""A reusable ``LightningDataModule`` of one-step pairs cut from trajectories ``(N, T, C, H, W)``.

Samples are ``(x_t, x_{t+1})`` with an optional history: the input stacks frames
``t − history + 1 … t`` along channels (field type ``frame_type.repeat(history)``), the target is
frame ``t + 1``. Trajectories (never individual frames) are split into train/val/test with a seeded
permutation, so no trajectory leaks between splits.

**Normalization commutes with the group.** Each *field* gets one scale, computed on the training
split: a vector's two components share one scale (the RMS over both), pseudoscalars and vectors are
not mean-subtracted (a mean would break their sign flips under reflections), and only scalars are
centred (a constant is invariant under every grid symmetry). Hence ``normalize(g·x) = g·normalize(x)``
for every element of a rotation/reflection/shift group.

**Augmentation** (optional, training split only) applies a random element of ``augment_group`` to
each sample through :meth:`~symcoherence.groups.Group.act_pair`; the element is drawn from a
``torch.Generator`` seeded by ``(augment_seed, sample index, visit count)``, so a run with
``num_workers=0`` is reproducible.

Example:
    >>> import torch
    >>> from symcoherence.groups import D4, FieldType
    >>> data = TrajectoryDataModule(FieldType(["pseudoscalar"]), D4(),
    ...                             trajectories=torch.randn(10, 5, 1, 8, 8), history=2)
    >>> data.setup()
    >>> inputs, targets = data.probe_batch(1)
    >>> inputs.shape, targets.shape, data.field_type
    (torch.Size([1, 2, 8, 8]), torch.Size([1, 1, 8, 8]), FieldType(['pseudoscalar', 'pseudoscalar']))
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from symcoherence.groups import FieldType, Group, resolve_group


class _Pairs(Dataset):
    """One-step pairs of a subset of trajectories, optionally augmented."""

    def __init__(self, frames, history, field_type, frame_type, group=None, seed=0):
        self.frames, self.history = frames, history
        self.field_type, self.frame_type = field_type, frame_type
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
        return self.group.act_pair(element, inputs, targets, self.field_type, self.frame_type)


class TrajectoryDataModule(L.LightningDataModule):
    """One-step pairs from trajectories ``(N, T, C, H, W)`` (see the module docstring).

    Subclasses override :meth:`load_trajectories` (and usually :meth:`prepare_data`).

    Args:
        frame_type: field type of one frame (``C`` channels).
        symmetry_group: the dataset's declared group (default orbit for diagnostics).
        trajectories: in-memory ``(N, T, C, H, W)`` data, used by the base :meth:`load_trajectories`.
        history: input frames per sample (stacked along channels).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of trajectories for validation.
        test_fraction: fraction of trajectories for testing.
        split_seed: seed of the trajectory permutation.
        augment_group: group whose random elements augment training samples (``"default"`` = the
            symmetry group), or ``None``.
        augment_seed: seed of the augmentation draws.
        normalize: scale fields as described in the module docstring.
    """

    def __init__(
        self,
        frame_type: FieldType,
        symmetry_group: Group | None = None,
        trajectories: torch.Tensor | np.ndarray | None = None,
        history: int = 1,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        augment_group: Group | str | None = None,
        augment_seed: int = 0,
        normalize: bool = True,
    ):
        super().__init__()
        if not isinstance(history, int) or history < 1:
            raise ValueError(
                f"history must be a positive integer number of frames, got {history!r}"
            )
        if not (
            0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                f"val_fraction and test_fraction must be in [0, 1) and sum to < 1 so that training "
                f"data remains; got {val_fraction} and {test_fraction}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.frame_type = frame_type
        self._symmetry_group = symmetry_group
        self._given = trajectories
        self.history, self.batch_size, self.num_workers = history, batch_size, num_workers
        self.val_fraction, self.test_fraction, self.split_seed = (
            val_fraction,
            test_fraction,
            split_seed,
        )
        self.augment_group = resolve_group(augment_group, symmetry_group)
        self.augment_seed, self.normalize = augment_seed, normalize
        self.splits: dict[str, torch.Tensor] = {}
        self.scale: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None

    # ------------------------------------------------------------------ declared types
    @property
    def field_type(self) -> FieldType:
        """Input field type: ``frame_type.repeat(history)``."""
        return self.frame_type.repeat(self.history)

    @property
    def target_field_type(self) -> FieldType:
        """Target field type: one frame."""
        return self.frame_type

    @property
    def symmetry_group(self) -> Group | None:
        """The dataset's declared symmetry group used by diagnostics by default."""
        return self._symmetry_group

    @property
    def in_channels(self) -> int:
        """Input channels ``history · C``."""
        return self.field_type.num_channels

    @property
    def out_channels(self) -> int:
        """Target channels ``C``."""
        return self.frame_type.num_channels

    # ------------------------------------------------------------------ data
    def load_trajectories(self) -> torch.Tensor | np.ndarray:
        """The full ``(N, T, C, H, W)`` data set; the base class returns ``trajectories``."""
        if self._given is None:
            raise ValueError(
                "TrajectoryDataModule needs trajectories=(N, T, C, H, W) data, or a subclass that "
                "overrides load_trajectories()"
            )
        return self._given

    def setup(self, stage: str | None = None) -> None:
        """Load, check, split by trajectory and normalize (idempotent)."""
        if self.splits:
            return
        data = torch.as_tensor(np.asarray(self.load_trajectories()), dtype=torch.float32)
        if data.dim() != 5 or data.shape[2] != self.frame_type.num_channels:
            raise ValueError(
                f"trajectories must be (N, T, C, H, W) with C = {self.frame_type.num_channels} for "
                f"{self.frame_type!r}; got shape {tuple(data.shape)}"
            )
        if data.shape[1] <= self.history:
            raise ValueError(
                f"history={self.history} needs trajectories of more than {self.history} frames; "
                f"got T = {data.shape[1]}"
            )
        count = data.shape[0]
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.split_seed))
        num_val, num_test = round(self.val_fraction * count), round(self.test_fraction * count)
        if count - num_val - num_test < 1:
            raise ValueError(f"{count} trajectories leave none for training; generate more")
        self.splits = {
            "train": order[num_val + num_test :].sort().values,
            "val": order[:num_val].sort().values,
            "test": order[num_val : num_val + num_test].sort().values,
        }
        self.scale, self.offset = self._statistics(data[self.splits["train"]])
        self.data = (data - self.offset[:, None, None]) / self.scale[:, None, None]

    def _statistics(self, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, offset)``: one scale per field, offsets only for scalars."""
        channels = self.frame_type.num_channels
        scale, offset = torch.ones(channels), torch.zeros(channels)
        if not self.normalize:
            return scale, offset
        for kind, start in self.frame_type.blocks():
            width = 2 if kind == "vector" else 1
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
        frames = self.data[self.splits[split]]
        return _Pairs(
            frames, self.history, self.field_type, self.frame_type, group, self.augment_seed
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
