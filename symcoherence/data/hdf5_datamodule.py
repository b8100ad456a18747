"""Bring your own data: one-step pairs from an ``(N, T, C, H, W)`` array in an HDF5 or NetCDF4 file.

NetCDF4 files are HDF5 files, so both are read with ``h5py``. The field type and symmetry group come
from the arguments or, when omitted, from the file's ``field_type`` (JSON list of kinds) and ``group``
(JSON of :meth:`~symcoherence.groups.Group.spec`) attributes of the dataset or the file, as written by
:mod:`symcoherence.data.cache`. Only declare a group your data actually has (check the physics,
forcing and boundaries): the diagnostic trusts it.

Example:
    >>> import tempfile, h5py, numpy as np
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with h5py.File(f"{root}/flow.h5", "w") as file:
    ...         _ = file.create_dataset("u", data=np.random.randn(4, 3, 2, 8, 8))
    ...     data = HDF5TrajectoryDataModule(f"{root}/flow.h5", "u", field_type=["vector"],
    ...                                     group="D4", val_fraction=0.25, test_fraction=0.25)
    ...     data.setup()
    >>> data.symmetry_group.name, data.in_channels
    ('D4', 2)
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from symcoherence.data.trajectories import TrajectoryDataModule
from symcoherence.groups import FieldType, Group, resolve_group


class HDF5TrajectoryDataModule(TrajectoryDataModule):
    """A :class:`~symcoherence.data.trajectories.TrajectoryDataModule` reading a file.

    Args:
        path: HDF5 or NetCDF4 file.
        dataset: name of the ``(N, T, C, H, W)`` variable in it.
        field_type: kinds of one frame, e.g. ``["vector"]``; ``None`` reads the ``field_type``
            attribute.
        group: ``"D4"``, ``"C4"``, a Group or a JSON spec; ``None`` reads the ``group`` attribute
            (no group if absent).
        **kwargs: :class:`TrajectoryDataModule` options (``history``, ``batch_size``, splits,
            ``augment_group``, ...).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the variable is missing, not 5-D, or no field type is given or stored.
    """

    def __init__(
        self,
        path: str,
        dataset: str = "trajectories",
        field_type: list[str] | None = None,
        group: Group | str | None = None,
        **kwargs,
    ):
        if not os.path.exists(path):
            raise FileNotFoundError(f"no trajectory file at {path!r}")
        with h5py.File(path, "r") as file:
            if dataset not in file:
                raise ValueError(
                    f"{path} has no variable {dataset!r}; it holds {sorted(file.keys())}"
                )
            variable = file[dataset]
            if variable.ndim != 5:
                raise ValueError(
                    f"{path}:{dataset} must be (N, T, C, H, W); got shape {variable.shape}"
                )
            attributes = {**dict(file.attrs), **dict(variable.attrs)}
        if field_type is None:
            if "field_type" not in attributes:
                raise ValueError(
                    f"{path}:{dataset} has no field_type attribute; pass field_type=[...] "
                    "(e.g. ['vector'] for (u_x, u_y), ['pseudoscalar'] for vorticity)"
                )
            field_type = json.loads(attributes["field_type"])
        if group is None and "group" in attributes:
            group = attributes["group"]
        self.path, self.dataset_name = path, dataset
        super().__init__(FieldType(field_type), resolve_group(group), **kwargs)

    def load_trajectories(self) -> np.ndarray:
        """The whole variable, read into memory."""
        with h5py.File(self.path, "r") as file:
            return file[self.dataset_name][()]
