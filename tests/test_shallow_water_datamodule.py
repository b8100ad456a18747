"""Shallow-water data: cache round trip, splits, probe batches, groups and errors."""

import h5py
import pytest
import torch

from symcoherence.data import SphericalShallowWaterDataModule, SphericalShallowWaterSource
from symcoherence.data.shallow_water import SphericalShallowWater
from symcoherence.groups import FieldType

SMALL = {
    "nlat": 16,
    "nlon": 32,
    "num_trajectories": 8,
    "num_frames": 4,
    "steps_per_frame": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("shallow_water_cache")


@pytest.fixture(scope="module")
def data(cache_dir):
    module = SphericalShallowWaterDataModule(cache_dir=str(cache_dir), **SMALL)
    module.setup()
    return module


def test_cache_round_trip(data, cache_dir, monkeypatch, tol):
    assert data.path == data.source.cache_path(cache_dir)
    assert data.path.name.startswith("shallow_water-")
    with h5py.File(data.path, "r") as file:
        stored = torch.as_tensor(file["trajectories"][()])
        assert stored.shape == (8, 4, 3, 16, 32)
        assert '"ZonalxEquator"' in file.attrs["diagnostic_group"]
    # The stored frames are the solver's rollout of trajectory i's seeded initial condition.
    solver = SphericalShallowWater(16, 32)
    first = solver.rollout(solver.initial_condition("random", seed=0), 4, 2)
    torch.testing.assert_close(stored[0], first.float(), **tol["fp32"])
    # A second module with the same parameters reads the file instead of generating.
    again = SphericalShallowWaterDataModule(cache_dir=str(cache_dir), **SMALL)
    monkeypatch.setattr(
        SphericalShallowWaterSource,
        "generate",
        lambda *args, **kwargs: pytest.fail("regenerated a valid cache"),
    )
    again.setup()
    assert again.path == data.path
    torch.testing.assert_close(again.data, data.data, **tol["exact"])
    monkeypatch.undo()
    # Any parameter that changes the data changes the key; the diagnostic stride does not.
    other = SphericalShallowWaterDataModule(cache_dir=str(cache_dir), **{**SMALL, "mach": 0.3})
    assert other.source.cache_path(cache_dir) != data.path
    stride = SphericalShallowWaterDataModule(cache_dir=str(cache_dir), **SMALL, zonal_stride=2)
    assert stride.source.cache_path(cache_dir) == data.path
    assert len(stride.diagnostic_group) == 32


def test_splits_are_disjoint_and_cover_all_trajectories(data):
    splits = {name: set(index.tolist()) for name, index in data.splits.items()}
    assert [len(splits[name]) for name in ("train", "val", "test")] == [6, 1, 1]
    assert set.union(*splits.values()) == set(range(8))
    assert sum(len(s) for s in splits.values()) == 8


def test_probe_batches(data):
    inputs, targets = data.probe_batch(4, split="train", seed=1)
    assert inputs.shape == (4, 3, 16, 32) and targets.shape == (4, 3, 16, 32)
    again = data.probe_batch(4, split="train", seed=1)
    assert torch.equal(inputs, again[0]) and torch.equal(targets, again[1])
    assert not torch.equal(inputs, data.probe_batch(4, split="train", seed=2)[0])
    with pytest.raises(ValueError, match="distinct trajectories"):
        data.probe_batch(2, split="val")


def test_declared_types_and_groups(data):
    assert data.field_type == FieldType(["vector", "scalar"])
    assert data.target_field_type == FieldType(["vector", "scalar"])
    assert (data.in_channels, data.out_channels) == (3, 3)
    assert data.diagnostic_group.name == data.symmetry_group.name == "ZonalxEquator"
    assert data.diagnostic_group.elements[:4] == ("e", "z4", "z8", "z12")
    assert len(data.diagnostic_group) == 16 and len(data.symmetry_group) == 64
    assert set(data.diagnostic_group.elements) <= set(data.symmetry_group.elements)


def test_normalization_commutes_with_the_group(data, tol):
    # (u, v) share one scale and are not centred; only the height is centred.
    assert data.scale[0] == data.scale[1] and data.offset[0] == 0 and data.offset[1] == 0
    raw = torch.as_tensor(data.source.load(data.cache_dir)[:2, 0])
    group, field_type = data.diagnostic_group, data.frame_field_type

    def normalize(x):
        return (x - data.offset[:, None, None]) / data.scale[:, None, None]

    for element in ("z4", "s", "sz12"):
        torch.testing.assert_close(
            normalize(group.act(element, raw, field_type)),
            group.act(element, normalize(raw), field_type),
            **tol["fp32"],
        )


def test_vorticity_fields_and_history(cache_dir):
    module = SphericalShallowWaterDataModule(
        cache_dir=str(cache_dir), fields="vdh", history=2, initial_condition="galewsky", **SMALL
    )
    module.setup()
    inputs, targets = module.probe_batch(1)
    assert module.field_type == FieldType(["pseudoscalar", "scalar", "scalar"]).repeat(2)
    assert inputs.shape == (1, 6, 16, 32) and targets.shape == (1, 3, 16, 32)
    assert module.offset[0] == 0  # a pseudoscalar is never centred
    # the sample is two consecutive stored frames and the frame after them
    windows = [
        (trajectory[start : start + 2].flatten(0, 1), trajectory[start + 2])
        for trajectory in module.data[module.splits["val"]]
        for start in range(2)
    ]
    assert any(torch.equal(inputs[0], x) and torch.equal(targets[0], y) for x, y in windows)
    # frames are steps_per_frame · dt = 2 · 600 s apart, the first at t = 0
    assert module.source.times.tolist() == [0.0, 1200.0, 2400.0, 3600.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nlon": 8}, "use nlon >= 10"),
        ({"nlat": 3}, "nlat must be an integer >= 4"),
        ({"nlat": 16.5}, "nlat must be an integer"),
        ({"grid": "cubed-sphere"}, "grid must be one of"),
        ({"zonal_stride": 5}, "positive divisor of nlon = 32"),
        ({"num_frames": 1}, "num_frames must be an integer >= 2"),
        ({"num_frames": 3, "history": 3}, "leaves no target"),
        ({"initial_condition": "vortex"}, "initial_condition must be one of"),
        ({"fields": "uv"}, "fields must be 'uvh'"),
        ({"dt": 5000.0}, "use dt <= "),
        ({"steps_per_frame": 0}, "steps_per_frame must be"),
    ],
)
def test_clear_errors(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        SphericalShallowWaterDataModule(cache_dir=str(tmp_path), **{**SMALL, **kwargs})
