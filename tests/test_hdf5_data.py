import json

import h5py
import numpy as np
import pytest
import torch

from symcoherence.data import (
    HDF5Source,
    HDF5TrajectoryDataModule,
    NavierStokesSource,
    TrajectoryDataModule,
)
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
        tmp_path / "a.h5",
        field_type=json.dumps(["vector"]),
        symmetry_group=json.dumps(group.spec()),
        diagnostic_group="D4",
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
    assert module.diagnostic_group.name == "D4"
    assert module.path == tmp_path / "a.h5"
    inputs, targets = module.probe_batch(2)
    assert inputs.shape == (2, 4, 8, 8) and targets.shape == (2, 2, 8, 8)
    first = module.splits["val"][0]
    stored = [torch.from_numpy(data[first, t]) for t in range(4)]
    assert any(torch.equal(targets[0], frame) for frame in stored)
    explicit = HDF5TrajectoryDataModule(
        str(tmp_path / "a.h5"),
        "velocity",
        field_type=["vector"],
        symmetry_group="C4",
        diagnostic_group="C4",
    )
    assert explicit.symmetry_group.name == explicit.diagnostic_group.name == "C4"


def test_undeclared_groups_are_none_and_diagnostic_defaults_to_symmetry(tmp_path):
    write(tmp_path / "b.h5", field_type=json.dumps(["vector"]))
    assert HDF5Source(tmp_path / "b.h5", "velocity").symmetry_group is None
    assert HDF5Source(tmp_path / "b.h5", "velocity").diagnostic_group is None
    declared = HDF5Source(tmp_path / "b.h5", "velocity", symmetry_group="D4")
    assert declared.diagnostic_group.name == "D4"


def test_reads_a_cache_file_of_a_generated_source(tmp_path):
    source = NavierStokesSource(n=16, num_trajectories=4, num_frames=3, burn_in=0.0)
    path = source.prepare(tmp_path, progress=False)
    again = HDF5Source(path)
    assert again.field_type == source.field_type and again.shape == source.shape
    assert again.diagnostic_group.spec() == source.diagnostic_group.spec()
    assert again.symmetry_group is None  # the full group is not stored
    generated = TrajectoryDataModule(source, cache_dir=str(tmp_path), progress=False)
    read = TrajectoryDataModule(again, cache_dir=str(tmp_path))
    generated.setup()
    read.setup()
    assert torch.equal(generated.data, read.data)


def test_clear_errors(tmp_path):
    write(tmp_path / "b.h5")
    with pytest.raises(ValueError, match="field_type"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "velocity")
    with pytest.raises(ValueError, match="no variable 'u'"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "u", field_type=["vector"])
    with pytest.raises(FileNotFoundError):
        HDF5TrajectoryDataModule(str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="C = 1"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "velocity", field_type=["scalar"])
    with pytest.raises(ValueError, match="outside the symmetry group C4"):
        HDF5Source(
            tmp_path / "b.h5",
            "velocity",
            field_type=["vector"],
            symmetry_group="C4",
            diagnostic_group="D4",
        )
    with pytest.raises(TypeError, match="did you mean 'field_type'"):
        HDF5TrajectoryDataModule(str(tmp_path / "b.h5"), "velocity", field_types=["vector"])
