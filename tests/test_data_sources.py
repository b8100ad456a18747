"""Sources are values: frozen, the cache key of their data, seeded per trajectory."""

import dataclasses

import pytest
import torch

from symcoherence.data import (
    ArraySource,
    GeneratedSource,
    NavierStokesSource,
    SphericalShallowWaterSource,
    TrajectoryDataModule,
)
from symcoherence.data.presets import _PIPELINE_OPTIONS

TINY = dict(n=16, num_trajectories=3, num_frames=3, burn_in=0.0, frame_interval=0.02)


def test_a_source_is_frozen_and_hashable():
    source = NavierStokesSource(**TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.n = 32
    assert hash(source) == hash(NavierStokesSource(**TINY))
    assert len({source, NavierStokesSource(**TINY), NavierStokesSource(**{**TINY, "n": 17})}) == 2


def test_equal_configs_share_a_cache_key_and_physics_changes_it(tmp_path):
    source = NavierStokesSource(**TINY)
    # the same values (an int where a float is meant included) are the same data
    assert NavierStokesSource(**{**TINY, "burn_in": 0}).cache_key() == source.cache_key()
    changed = [
        dataclasses.replace(source, viscosity=2e-3),
        dataclasses.replace(source, forcing="kolmogorov", forcing_wavenumber=1, drag=0.1),
        dataclasses.replace(source, anisotropy=2.0),
        dataclasses.replace(source, seed=1),
        dataclasses.replace(source, num_frames=4),
        dataclasses.replace(source, fields="velocity"),
    ]
    keys = {source.cache_key(), *(other.cache_key() for other in changed)}
    assert len(keys) == 1 + len(changed)
    config = source.cache_config()
    assert config["source"] == "NavierStokesSource" and "cache_format" in config
    assert source.cache_path(tmp_path).name == f"navier_stokes-{source.cache_key()}.h5"


def test_generation_is_seeded_per_trajectory_not_per_batch():
    source = NavierStokesSource(**TINY, solver_dtype="float64")
    whole = source.generate()
    assert whole.shape == (3, 3, 1, 16, 16) and whole.dtype == torch.float32
    torch.testing.assert_close(source.generate(1, 2), whole[1:], rtol=0, atol=0)
    assert source.trajectory_seeds(1, 2) == [1, 2]
    assert dataclasses.replace(source, seed=2).trajectory_seeds(0, 1) == [2_000_006]
    with pytest.raises(ValueError, match="outside the 3"):
        source.generate(2, 2)


def test_generated_sources_declare_full_and_diagnostic_groups():
    for source in (
        NavierStokesSource(**TINY),
        NavierStokesSource(**TINY, forcing="kolmogorov", forcing_wavenumber=1, drag=0.1),
        NavierStokesSource(**TINY, forcing="diagonal", drag=0.1),
        SphericalShallowWaterSource(nlat=16, nlon=32, num_trajectories=2, num_frames=2),
    ):
        assert isinstance(source, GeneratedSource)
        full, small = source.symmetry_group, source.diagnostic_group
        assert len(small) < len(full) and set(small.elements) <= set(full.elements), source


@pytest.mark.parametrize("source_class", [NavierStokesSource, SphericalShallowWaterSource])
def test_source_fields_and_pipeline_options_do_not_collide(source_class):
    names = {field.name for field in dataclasses.fields(source_class)}
    assert not names & set(_PIPELINE_OPTIONS)


def test_array_source_serves_the_pipeline():
    trajectories = torch.randn(5, 3, 2, 8, 8)
    data = TrajectoryDataModule(
        ArraySource(trajectories, ["vector"], symmetry_group="D4"), val_fraction=0.2
    )
    data.setup()
    assert data.path is None and data.diagnostic_group.name == data.symmetry_group.name == "D4"
    undeclared = TrajectoryDataModule(ArraySource(trajectories, ["vector"]), val_fraction=0.2)
    assert undeclared.symmetry_group is None and undeclared.diagnostic_group is None
    with pytest.raises(ValueError, match="C = 1"):
        ArraySource(trajectories, ["scalar"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_trajectories=0), "num_trajectories must be an integer >= 1"),
        (dict(num_frames=1.5), "num_frames must be an integer >= 2"),
        (dict(n=16.0), "n must be an integer >= 4"),
        (dict(viscosity="low"), "viscosity must be a number"),
        (dict(solver_dtype="float16"), "solver_dtype"),
    ],
)
def test_bad_source_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NavierStokesSource(**{**TINY, **kwargs})
