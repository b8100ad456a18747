"""TheWellSource on synthetic files written in The Well's published layout (x-first storage)."""

import logging
import os

import h5py
import numpy as np
import pytest
import torch
from helpers.file_formats import boundary, write_the_well

from symcoherence.data import TheWellSource, TrajectoryDataModule
from symcoherence.groups import D4, FieldType

B, T, NX, NY = 3, 5, 8, 6


def _ramp(trajectories=B, steps=T, nx=NX, ny=NY):
    """A field that varies along x only: value = x index (+ 100 · trajectory + 10 · step)."""
    values = np.arange(nx, dtype=np.float32)[:, None] * np.ones(ny, np.float32)[None, :]
    offset = (
        100 * np.arange(trajectories)[:, None, None, None] + 10 * np.arange(steps)[:, None, None]
    )
    return values[None, None] + offset  # (B, T, x, y)


def _velocity(trajectories=B, steps=T, nx=NX, ny=NY):
    """u_x = x index (varies along x), u_y = −1 everywhere: (B, T, x, y, 2)."""
    ramp = _ramp(trajectories, steps, nx, ny)
    return np.stack([ramp, -np.ones_like(ramp)], axis=-1)


@pytest.fixture
def flow(tmp_path):
    return write_the_well(
        tmp_path / "flow.hdf5",
        {
            "tracer": {"order": 0, "data": _ramp()},
            "velocity": {"order": 1, "data": _velocity()},
        },
        nx=NX,
        ny=NY,
        steps=T,
        trajectories=B,
    )


def test_x_first_storage_comes_out_with_x_last_and_u_x_in_channel_0(flow):
    source = TheWellSource(flow, cache=False)
    assert source.field_type == FieldType(["scalar", "vector"])
    assert source.shape == (B, T, 3, NY, NX)  # H = n_y, W = n_x
    data = source.load(None)
    tracer, ux, uy = data[:, :, 0], data[:, :, 1], data[:, :, 2]
    # varies along the last axis (x) and not along the second-to-last (y)
    assert np.all(np.diff(tracer, axis=-1) == 1) and np.all(np.diff(tracer, axis=-2) == 0)
    assert np.array_equal(ux, tracer)  # the x-component is channel 0 of the vector
    assert np.all(uy == -1)
    assert tracer[2, 4, 0, 5] == 200 + 40 + 5  # trajectory, step, y, x


def test_tensors_in_either_published_shape_map_to_xx_xy_yx_yy(tmp_path):
    components = np.array([[0.0, 1.0], [10.0, 11.0]], np.float32)  # T_ij = 10 i + j
    full = np.broadcast_to(components, (B, T, NX, NY, 2, 2))
    path = write_the_well(
        tmp_path / "tensors.hdf5",
        {
            "D": {"order": 2, "data": full},  # trailing D × D, as the reader code has it
            "E": {"order": 2, "data": full.reshape(B, T, NX, NY, 4)},  # trailing D², as the docs
        },
        nx=NX,
        ny=NY,
    )
    source = TheWellSource(path, cache=False)
    assert source.field_type == FieldType(["tensor", "tensor"])
    data = source.load(None)
    assert np.array_equal(data[0, 0, :, 2, 3], [0, 1, 10, 11, 0, 1, 10, 11])


def test_symmetric_tensor_keeps_four_components_and_transforms_as_m_t_mt(tmp_path):
    rng = np.random.default_rng(0)
    strain = rng.normal(size=(B, T, 8, 8, 2, 2)).astype(np.float32)
    strain = (strain + strain.swapaxes(-1, -2)) / 2
    path = write_the_well(
        tmp_path / "strain.hdf5", {"E": {"order": 2, "data": strain, "symmetric": True}}, ny=8
    )
    source = TheWellSource(path, cache=False)
    data = torch.from_numpy(source.load(None))
    assert source.field_type == FieldType(["tensor"])
    assert torch.equal(data[:, :, 1], data[:, :, 2])  # T_xy = T_yx
    # the stored tensor at grid point (x=2, y=5) is frame[:, 5, 2] after the transpose
    assert np.array_equal(data[1, 2, :, 5, 2].numpy(), strain[1, 2, 2, 5].reshape(4))
    rotated = D4().act("r", data[0], source.field_type)
    assert torch.equal(rotated[:, 1], rotated[:, 2])


def test_pseudoscalar_is_declared_by_name(tmp_path):
    path = write_the_well(
        tmp_path / "vort.hdf5",
        {
            "vorticity": {"order": 0, "data": _ramp(ny=8)},
            "u": {"order": 1, "data": _velocity(ny=8)},
        },
        ny=8,
    )
    source = TheWellSource(path, ["u", "vorticity"], pseudoscalars=["vorticity"], cache=False)
    assert source.field_type == FieldType(["vector", "pseudoscalar"])
    with pytest.raises(ValueError, match=r"pseudoscalars \['u'\] must be rank-0 fields"):
        TheWellSource(path, pseudoscalars=["u"])


def test_fully_periodic_square_gives_d4_and_every_shift(tmp_path):
    path = write_the_well(
        tmp_path / "square.hdf5", {"c": {"order": 0, "data": _ramp(nx=8, ny=8)}}, nx=8, ny=8
    )
    source = TheWellSource(path, cache=False)
    assert source.symmetry_group.name == "D4xShifts"
    assert len(source.symmetry_group) == 8 * 8**2
    assert source.diagnostic_group.name == "D4"
    assert "square periodic" in source.symmetry_note


def test_rectangular_periodic_domain_drops_the_quarter_turns(flow):
    source = TheWellSource(flow, cache=False)
    assert source.symmetry_group.name == "D2xShifts"
    assert source.diagnostic_group.elements == ("e", "r2", "s", "sr2")
    frame = torch.from_numpy(source.load(None)[0, 0])
    assert torch.equal(
        source.symmetry_group.act("x3y2", frame, source.field_type), frame.roll((2, 3), (-2, -1))
    )


@pytest.mark.parametrize("periodic_axis", ["x", "y"])
def test_one_wall_axis_gives_shifts_along_the_periodic_one_and_the_wall_mirror(
    tmp_path, periodic_axis
):
    walls = "y" if periodic_axis == "x" else "x"
    n = {"x": NX, "y": NY}
    path = write_the_well(
        tmp_path / "channel.hdf5",
        {"u": {"order": 1, "data": _velocity()}},
        boundaries=[
            boundary("PERIODIC", periodic_axis, n[periodic_axis]),
            boundary("WALL", walls, n[walls]),
        ],
    )
    source = TheWellSource(path, cache=False)
    assert source.symmetry_group.name == "MirrorsxShifts"
    assert set(source.diagnostic_group.elements) == {"e", "s", "sr2", "r2"}
    shifts = [
        e
        for e in source.symmetry_group.elements
        if "|" not in e and e not in ("e", "s", "sr2", "r2")
    ]
    assert len(shifts) == n[periodic_axis] - 1
    assert all(f"{walls}0" in e for e in shifts)  # no shift along the wall axis
    frame = torch.from_numpy(source.load(None)[0, 0])  # (u_x, u_y) on (y, x)
    wall_mirror = "sr2" if walls == "y" else "s"
    mirrored = source.diagnostic_group.act(wall_mirror, frame, source.field_type)
    dim, component = (-2, 1) if walls == "y" else (-1, 0)
    expected = frame.flip(dim)
    expected[component] = -expected[component]
    assert torch.equal(mirrored, expected)  # a plain flip between the walls, normal part negated
    for a in source.symmetry_group.elements[::7]:
        for b in source.symmetry_group.elements[::5]:
            assert torch.equal(
                source.symmetry_group.act(
                    a, source.symmetry_group.act(b, frame, source.field_type), source.field_type
                ),
                source.symmetry_group.act(
                    source.symmetry_group.compose(a, b), frame, source.field_type
                ),
            )


def test_open_boundaries_give_the_trivial_group_with_a_message(tmp_path, caplog):
    path = write_the_well(
        tmp_path / "open.hdf5",
        {"c": {"order": 0, "data": _ramp()}},
        boundaries=[boundary("OPEN", "x", NX), boundary("open", "y", NY)],
    )
    with caplog.at_level(logging.WARNING, logger="symcoherence.data.the_well"):
        source = TheWellSource(path, cache=False)
    assert source.symmetry_group.elements == ("e",)
    assert "no periodic axis" in source.symmetry_note
    assert "trivial group" in caplog.text


def test_declared_group_overrides_the_derived_one(tmp_path):
    path = write_the_well(
        tmp_path / "open.hdf5",
        {"c": {"order": 0, "data": _ramp(ny=8)}},
        ny=8,
        boundaries=[boundary("OPEN", "x", NX), boundary("OPEN", "y", 8)],
    )
    source = TheWellSource(path, symmetry_group="D4", cache=False)
    assert source.symmetry_group.name == "D4" and source.diagnostic_group.name == "D4"
    assert source.symmetry_note == "declared by the caller"


def test_bad_field_name_is_a_one_line_error(flow):
    with pytest.raises(
        ValueError, match=r"has no field\(s\) \['presure'\]; its fields are"
    ) as error:
        TheWellSource(flow, ["presure"])
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_the_wells_is_a_one_line_error(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("u", data=np.zeros((2, 3, 2, 4, 4)))
    with pytest.raises(
        ValueError, match="is not a file of The Well: it lacks @n_spatial_dims"
    ) as error:
        TheWellSource(path)
    assert "\n" not in str(error.value) and "HDF5Source" in str(error.value)
    with pytest.raises(FileNotFoundError, match="no file of The Well"):
        TheWellSource(tmp_path / "missing.hdf5")
    three_d = write_the_well(
        tmp_path / "3d.hdf5", {"c": {"order": 0, "data": _ramp()}}, n_spatial_dims=3
    )
    with pytest.raises(ValueError, match="3-D data"):
        TheWellSource(three_d)


def test_window_reads_only_the_selected_trajectories_and_frames(tmp_path, flow):
    source = TheWellSource(
        flow, num_trajectories=2, first_frame=1, frame_stride=2, num_frames=2, cache=False
    )
    data = source.load(None)
    assert data.shape == (2, 2, 3, NY, NX)
    assert np.array_equal(data[:, :, 0, 0, 0], [[10, 30], [110, 130]])
    np.testing.assert_allclose(source.times, [0.25, 0.75])
    with pytest.raises(ValueError, match="num_trajectories=4 but"):
        TheWellSource(flow, num_trajectories=4)


def test_constant_and_partially_varying_fields_are_broadcast(tmp_path):
    profile = np.arange(NY, dtype=np.float32)  # varies along y only, the same for all
    path = write_the_well(
        tmp_path / "coefficients.hdf5",
        {
            "c": {"order": 0, "data": _ramp()},
            "profile": {
                "order": 0,
                "data": profile,
                "sample_varying": False,
                "time_varying": False,
                "dim_varying": [False, True],
            },
        },
    )
    assert TheWellSource(path, cache=False).field_type == FieldType(["scalar"])  # time-varying only
    data = TheWellSource(path, ["c", "profile"], cache=False).load(None)
    assert np.array_equal(data[2, 3, 1], np.broadcast_to(profile[:, None], (NY, NX)))
    bad = write_the_well(tmp_path / "bad.hdf5", {"c": {"order": 0, "data": _ramp()[:, :, :, :4]}})
    with pytest.raises(ValueError, match="has shape"):
        TheWellSource(bad)


def test_cached_window_equals_a_direct_read_and_a_changed_file_gets_a_new_key(tmp_path, flow):
    cache = tmp_path / "cache"
    source = TheWellSource(flow, num_trajectories=2)
    path = source.prepare(cache, progress=False)
    assert path.parent == cache and path.name.startswith("the_well-")
    direct = TheWellSource(flow, num_trajectories=2, cache=False).load(None)
    assert np.array_equal(source.load(cache), direct)
    key = source.cache_config()
    with h5py.File(flow, "a") as file:
        file["t0_fields"]["tracer"][0, 0, 0, 0] = -5.0
    os.utime(flow, ns=(1, 1))
    assert TheWellSource(flow, num_trajectories=2).cache_config() != key


def test_datamodule_normalizes_each_tensor_with_one_scale(tmp_path):
    rng = np.random.default_rng(1)
    tensor = rng.normal(size=(8, T, 8, 8, 2, 2)).astype(np.float32)
    tensor[..., 0, 1] *= 5  # components of very different sizes share one scale
    path = write_the_well(
        tmp_path / "stress.hdf5",
        {"S": {"order": 2, "data": tensor}, "u": {"order": 1, "data": _velocity(8, T, 8, 8)}},
        ny=8,
        trajectories=8,
    )
    data = TrajectoryDataModule(
        TheWellSource(path), cache_dir=str(tmp_path / "cache"), progress=False, val_fraction=0.25
    )
    data.setup()
    assert data.frame_field_type == FieldType(["vector", "tensor"])  # t1 before t2
    assert torch.unique(data.scale[:2]).numel() == 1 and torch.unique(data.scale[2:]).numel() == 1
    assert torch.all(data.offset == 0)
    x, _ = data.probe_batch(2)
    assert x.shape == (2, 6, 8, 8)
