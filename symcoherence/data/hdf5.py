"""Bring your own data: trajectories ``(N, T, C, H, W)`` in an HDF5 or NetCDF4 file as a source.

NetCDF4 files are HDF5 files, so both are read with ``h5py``. The field type and groups come from the
arguments or, when omitted, from the attributes ``field_type`` (JSON list of kinds),
``symmetry_group`` and ``diagnostic_group`` (JSON of :meth:`~symcoherence.groups.Group.spec`) of the
variable or the file. Files of the trajectory cache (:mod:`symcoherence.data.cache`) carry
``field_type`` and ``diagnostic_group``. Only declare a group your data actually has (check the
physics, forcing and boundaries): the diagnostic trusts it.

Example:
    >>> import tempfile, h5py, numpy as np
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with h5py.File(f"{root}/flow.h5", "w") as file:
    ...         _ = file.create_dataset("u", data=np.random.randn(4, 3, 2, 8, 8))
    ...     source = HDF5Source(f"{root}/flow.h5", "u", field_type=["vector"], symmetry_group="D4")
    >>> source.shape, source.diagnostic_group.name
    ((4, 3, 2, 8, 8), 'D4')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from symcoherence.data.source import TrajectorySource, declare
from symcoherence.groups import FieldType, Group


@dataclass(frozen=True)
class HDF5Source(TrajectorySource):
    """Trajectories stored in one variable of an HDF5/NetCDF4 file (see the module docstring).

    Args:
        path: the file.
        dataset: name of the ``(N, T, C, H, W)`` variable in it.
        field_type: kinds of one frame, e.g. ``["vector"]``; ``None`` reads the ``field_type``
            attribute.
        symmetry_group: the full admissible group of the data (``"D4"``, ``"C4"``, a Group or a
            JSON spec); ``None`` reads the ``symmetry_group`` attribute (no group if absent).
        diagnostic_group: the group measured by default; ``None`` reads the ``diagnostic_group``
            attribute, else uses ``symmetry_group``. Must lie inside ``symmetry_group``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the variable is missing or not 5-D, no field type is given or stored, its
            channel count does not match the data, or the diagnostic group is not a subgroup.
    """

    path: str | os.PathLike
    dataset: str = "trajectories"
    _: KW_ONLY
    field_type: FieldType | Sequence[str] | None = None
    symmetry_group: Group | str | dict | None = None
    diagnostic_group: Group | str | dict | None = None

    def __post_init__(self) -> None:
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no trajectory file at {str(self.path)!r}")
        with h5py.File(self.path, "r") as file:
            if self.dataset not in file:
                raise ValueError(
                    f"{self.path} has no variable {self.dataset!r}; it holds {sorted(file.keys())}"
                )
            variable = file[self.dataset]
            shape = tuple(variable.shape)
            attributes = {**dict(file.attrs), **dict(variable.attrs)}
        for name in ("field_type", "symmetry_group", "diagnostic_group"):
            if getattr(self, name) is None and name in attributes:
                object.__setattr__(self, name, _decode(attributes[name]))
        if self.field_type is None:
            raise ValueError(
                f"{self.path}:{self.dataset} has no field_type attribute; pass field_type=[...] "
                "(e.g. ['vector'] for (u_x, u_y), ['pseudoscalar'] for vorticity)"
            )
        object.__setattr__(self, "_shape", shape)
        declare(self, shape, f"{self.path}:{self.dataset}")

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """The variable's shape ``(N, T, C, H, W)``."""
        return self._shape  # type: ignore[attr-defined]

    def prepare(
        self,
        cache_dir: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ) -> Path:
        """Nothing to make: the file itself (the arguments are not used)."""
        return Path(self.path)

    def load(self, cache_dir: str | os.PathLike) -> np.ndarray:
        """The whole variable, read into memory (``cache_dir`` is not used)."""
        with h5py.File(self.path, "r") as file:
            return file[self.dataset][()]


def _decode(value: object) -> object:
    """An attribute as stored: JSON text (a list of kinds, a group spec) or a plain name."""
    text = value.decode() if isinstance(value, bytes) else value
    if isinstance(text, str) and text.lstrip().startswith(("[", "{")):
        return json.loads(text)
    return text
