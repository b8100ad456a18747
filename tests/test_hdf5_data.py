import json

import h5py
import numpy as np
import pytest
import torch

from symcoherence.data import HDF5TrajectoryDataModule
from symcoherence.groups import D4, Product, Shifts


def write(path, **attrs):
    data = np.random.default_rng(0).standard_normal((6, 4, 2, 8, 8)).astype(np.float32)
    with h5py.File(path, "w") as file:
        variable = file.create_dataset("velocity", data=data)
        for key, value in attrs.items():
            variable.attrs[key] = value
    return data


def test_reads_declared_types_from_arguments_or_attributes(tmp_path):
    group = Product(D4(), Shifts(box=1, period=8))
    data = write(
        tmp_path / "a.h5", field_type=json.dumps(["vector"]), group=json.dumps(group.spec())
    )
    module = HDF5TrajectoryDataModule(
        str(tmp_path / "a.h5"),
        "velocity",
        history=2,
        val_fraction=1 / 3,
        test_fraction=1 / 6,
        normalize=False,
    )
    module.setup()
    assert module.symmetry_group.spec() == group.spec() and module.in_channels == 4
    inputs, targets = module.probe_batch(2)
    assert inputs.shape == (2, 4, 8, 8) and targets.shape == (2, 2, 8, 8)
    first = module.splits["val"][0]
    stored = [torch.from_numpy(data[first, t]) for t in range(4)]
    assert any(torch.equal(targets[0], frame) for frame in stored)
    explicit = HDF5TrajectoryDataModule(
        str(tmp_path / "a.h5"), "velocity", field_type=["vector"], group="C4"
    )
    assert explicit.symmetry_group.name == "C4"


def test_clear_errors(tmp_path):
    write(tmp_path / "b.h5")
    with pytest.raises(ValueError, match="field_type"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "velocity")
    with pytest.raises(ValueError, match="no variable 'u'"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "u", field_type=["vector"])
    with pytest.raises(FileNotFoundError):
        HDF5TrajectoryDataModule(str(tmp_path / "missing.h5"))
    wrong = HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "velocity", field_type=["scalar"])
    with pytest.raises(ValueError, match="C = 1"):
        wrong.setup()
