r"""Data sources: where a :class:`~symcoherence.data.TrajectoryDataModule` gets its trajectories.

A source is a value that describes a data set of trajectories ``(N, T, C, H, W)`` (``N``
trajectories of ``T`` frames, each frame ``C`` channels on an ``H × W`` grid) and declares how the
symmetry groups act on it:

* ``field_type``: the :class:`~symcoherence.groups.FieldType` of one frame (``C`` channels);
* ``symmetry_group``: the full admissible group, every element that maps solutions to solutions
  (``None`` when undeclared);
* ``diagnostic_group``: the small subgroup of it that diagnostics measure by default.

:class:`GeneratedSource` is the base of the sources a solver simulates
(:class:`~symcoherence.data.NavierStokesSource`,
:class:`~symcoherence.data.SphericalShallowWaterSource`): a frozen dataclass of physics, grid and
sampling parameters. Its fields are the cache key (:meth:`GeneratedSource.cache_key`, with a cache
format version), and :meth:`GeneratedSource.generate` simulates the trajectories; the device, the
batch size and the progress bar are arguments of generation, not of the source, because they do not
change the data. Trajectory ``i`` is seeded with ``seed · 1_000_003 + i``
(:meth:`GeneratedSource.trajectory_seeds`), so it does not depend on the batch it was generated in.

:class:`ArraySource` wraps trajectories already in memory; :class:`~symcoherence.data.HDF5Source`
reads a file.

Example:
    >>> import torch
    >>> from symcoherence.groups import D4
    >>> source = ArraySource(torch.zeros(4, 3, 1, 8, 8), ["pseudoscalar"], symmetry_group=D4())
    >>> source.shape, source.diagnostic_group.name
    ((4, 3, 1, 8, 8), 'D4')
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from symcoherence.data.cache import CACHE_FORMAT, cache_key, cache_source, load_source
from symcoherence.groups import FieldType, Group, resolve_group

SEED_STRIDE = 1_000_003  # trajectory i of seed s is drawn with seed s · SEED_STRIDE + i


class TrajectorySource(ABC):
    """What a :class:`~symcoherence.data.TrajectoryDataModule` needs from a data source.

    Subclasses provide :attr:`field_type`, :attr:`shape` and :meth:`load`; they override
    :meth:`prepare` when the data must first be made (generated into the cache), and declare
    :attr:`symmetry_group` and :attr:`diagnostic_group` when they know them.

    Attributes:
        field_type: field type of one frame (``C`` channels).
        symmetry_group: the full admissible group (every symmetry of the data), or ``None`` if
            undeclared.
        diagnostic_group: the subgroup of ``symmetry_group`` measured by default, or ``None``.
    """

    field_type: FieldType
    symmetry_group: Group | None = None
    diagnostic_group: Group | None = None

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(N, T, C, H, W)`` of the whole data set, known before any data is made or read."""

    def prepare(
        self,
        cache_dir: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ) -> Path | None:
        """Make the data available (e.g. generate it into ``cache_dir``); return its file, if any.

        The base class has nothing to make and returns ``None``.
        """
        return None

    @abstractmethod
    def load(self, cache_dir: str | os.PathLike) -> np.ndarray | torch.Tensor:
        """The whole ``(N, T, C, H, W)`` data set, after :meth:`prepare`."""


@dataclass(frozen=True, kw_only=True)
class GeneratedSource(TrajectorySource):
    """Trajectories simulated by a solver and kept in the HDF5 trajectory cache.

    A frozen dataclass: equal sources describe the same data and share one cache file. Subclasses
    add their physics and grid fields and implement :attr:`field_type`, :attr:`symmetry_group`,
    :attr:`diagnostic_group`, :attr:`grid_shape`, :attr:`times` and :meth:`generate`. A field
    declared with ``metadata={"cache_key": False}`` does not change the data (e.g. the choice of
    diagnostic group) and is left out of the key.

    Args:
        num_trajectories: trajectories to generate (``N``).
        num_frames: recorded frames per trajectory (``T``).
        seed: base seed; trajectory ``i`` is drawn with seed ``seed · 1_000_003 + i``.

    Raises:
        ValueError: if ``num_trajectories < 1``, ``num_frames < 2`` (a pair needs two frames) or
            ``seed < 0``.
    """

    cache_prefix: ClassVar[str] = "trajectories"

    num_trajectories: int = 32
    num_frames: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (("num_trajectories", 1), ("num_frames", 2), ("seed", 0)):
            check_integer(type(self).__name__, name, getattr(self, name), least)

    # ------------------------------------------------------------------ what a subclass provides
    @property
    @abstractmethod
    def field_type(self) -> FieldType:
        """Field type of one frame (``C`` channels)."""

    @property
    @abstractmethod
    def symmetry_group(self) -> Group:
        """Every element the solver commutes with (for this configuration)."""

    @property
    @abstractmethod
    def diagnostic_group(self) -> Group:
        """The small subgroup of :attr:`symmetry_group` measured by default."""

    @property
    @abstractmethod
    def grid_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one frame."""

    @property
    @abstractmethod
    def times(self) -> np.ndarray:
        """``(num_frames,)`` recorded times."""

    @abstractmethod
    def generate(
        self, start: int = 0, count: int | None = None, *, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Simulate trajectories ``start … start + count − 1`` (default: all).

        Returns:
            ``(count, T, C, H, W)`` float32 on the CPU, each trajectory seeded by
            :meth:`trajectory_seeds` so that the result does not depend on ``count``.
        """

    def provenance(self) -> dict[str, Any]:
        """What determines the data besides the fields (the solver's scheme, library versions)."""
        return {}

    # ------------------------------------------------------------------ derived
    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(num_trajectories, num_frames, C, H, W)``."""
        return (
            self.num_trajectories,
            self.num_frames,
            self.field_type.num_channels,
            *self.grid_shape,
        )

    def trajectory_seeds(self, start: int, count: int) -> list[int]:
        """Seeds of trajectories ``start … start + count − 1``: ``seed · 1_000_003 + i``."""
        return [self.seed * SEED_STRIDE + index for index in range(start, start + count)]

    def _span(self, start: int, count: int | None) -> int:
        """Validate a ``generate`` range and return its ``count``."""
        count = self.num_trajectories - start if count is None else count
        if not 0 <= start < start + count <= self.num_trajectories:
            raise ValueError(
                f"trajectories {start} … {start + count - 1} are outside the "
                f"{self.num_trajectories} of this source; need 0 ≤ start and "
                f"start + count ≤ num_trajectories"
            )
        return count

    def cache_config(self) -> dict[str, Any]:
        """Everything that determines the data, as the JSON-serializable dict that is hashed."""
        fields = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.metadata.get("cache_key", True)
        }
        return {
            "source": type(self).__name__,
            "cache_format": CACHE_FORMAT,
            **self.provenance(),
            **fields,
        }

    def cache_key(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`cache_config` (equal sources, equal keys)."""
        return cache_key(self.cache_config())

    def cache_path(self, cache_dir: str | os.PathLike) -> Path:
        """``cache_dir / f"{cache_prefix}-{cache_key()}.h5"``."""
        return Path(cache_dir) / f"{self.cache_prefix}-{self.cache_key()}.h5"

    # ------------------------------------------------------------------ the cache
    def prepare(
        self,
        cache_dir: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ) -> Path:
        """Generate the trajectories into ``cache_dir`` unless a valid file exists; return it.

        Args:
            cache_dir: directory of the HDF5 trajectory cache.
            device: torch device of the simulation.
            generation_batch: trajectories per :meth:`generate` call and per cache chunk (the most
                an interruption loses; a restarted generation resumes).
            progress: show a progress bar.
        """
        return cache_source(
            self,
            cache_dir,
            lambda start, count: self.generate(start, count, device=device),
            chunk_size=generation_batch,
            progress=progress,
        )

    def load(self, cache_dir: str | os.PathLike) -> np.ndarray:
        """The validated cached trajectories (call :meth:`prepare` first)."""
        return load_source(self, cache_dir)


@dataclass(frozen=True, eq=False)
class ArraySource(TrajectorySource):
    """Trajectories already in memory.

    Args:
        trajectories: ``(N, T, C, H, W)`` tensor or array.
        field_type: field type of one frame, or its kinds (e.g. ``["vector"]``).
        symmetry_group: the full admissible group of the data (a Group, a name such as ``"D4"``
            or a spec), or ``None``.
        diagnostic_group: the group measured by default (default: ``symmetry_group``); must lie
            inside ``symmetry_group``.

    Raises:
        ValueError: if ``trajectories`` is not 5-D with ``C`` channels for ``field_type``, or the
            diagnostic group has elements outside the symmetry group.
    """

    trajectories: torch.Tensor | np.ndarray = dataclasses.field(repr=False)
    field_type: FieldType | Sequence[str]
    _: KW_ONLY
    symmetry_group: Group | str | dict | None = None
    diagnostic_group: Group | str | dict | None = None

    def __post_init__(self) -> None:
        declare(self, tuple(self.trajectories.shape), "trajectories")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``trajectories.shape``."""
        return tuple(self.trajectories.shape)  # type: ignore[return-value]

    def load(self, cache_dir: str | os.PathLike) -> torch.Tensor | np.ndarray:
        """The trajectories themselves (``cache_dir`` is not used)."""
        return self.trajectories


def declare(source: Any, shape: tuple[int, ...], where: str) -> None:
    """Coerce and check a frozen source's ``field_type``, ``symmetry_group``, ``diagnostic_group``.

    ``field_type`` becomes a :class:`FieldType` and the groups :class:`Group` objects (the
    diagnostic group defaults to the symmetry group).

    Raises:
        ValueError: if ``shape`` is not ``(N, T, C, H, W)`` with ``C`` channels for the field type,
            or the diagnostic group has elements outside the symmetry group.
    """
    field_type = FieldType.coerce(source.field_type)
    symmetry = resolve_group(source.symmetry_group)
    diagnostic = resolve_group(source.diagnostic_group, default=symmetry)
    diagnostic = symmetry if diagnostic is None else diagnostic
    if len(shape) != 5 or shape[2] != field_type.num_channels:
        raise ValueError(
            f"{where} must be (N, T, C, H, W) with C = {field_type.num_channels} channels for "
            f"{field_type!r}; got shape {shape}. Pass the field type of one frame, e.g. "
            "['vector'] for (u_x, u_y) or ['pseudoscalar'] for vorticity"
        )
    if symmetry is not None and diagnostic is not None:
        outside = [element for element in diagnostic.elements if element not in symmetry]
        if outside:
            raise ValueError(
                f"the diagnostic group {diagnostic.name} has elements {outside} outside the "
                f"symmetry group {symmetry.name}; measure a subgroup of the data's symmetries, or "
                "declare the larger symmetry group"
            )
    object.__setattr__(source, "field_type", field_type)
    object.__setattr__(source, "symmetry_group", symmetry)
    object.__setattr__(source, "diagnostic_group", diagnostic)


def check_integer(owner: str, name: str, value: Any, least: int) -> None:
    """Raise a ``ValueError`` unless ``value`` is an integer ``>= least`` (``bool`` excluded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{owner}: {name} must be an integer >= {least}, got {value!r}")


def as_float(source: Any, *names: str) -> None:
    """Store the fields ``names`` of a frozen source as ``float`` (``1`` and ``1.0`` share a key)."""
    for name in names:
        value = getattr(source, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            if value is None:
                continue
            raise ValueError(
                f"{type(source).__name__}: {name} must be a number, got {value!r} "
                f"({type(value).__name__})"
            )
        object.__setattr__(source, name, float(value))
