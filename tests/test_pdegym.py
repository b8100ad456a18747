"""PDEGymSource on synthetic NetCDF4 (HDF5) files in PDEGym's NS and CE layouts."""

import h5py
import numpy as np
import pytest
import torch
from helpers.file_formats import divergence_free_velocity, write_pdegym

from symcoherence.data import PDEGymSource
from symcoherence.data.pdegym import relative_divergence
from symcoherence.groups import FieldType

N, T, GRID = 4, 3, 16


@pytest.fixture
def velocity():
    """(N, T, 2, y, x) divergence-free velocities in this project's layout."""
    return divergence_free_velocity(N, T, GRID)


@pytest.fixture
def ns_file(tmp_path, velocity):
    tracer = np.random.default_rng(0).normal(size=(N, T, 1, GRID, GRID))
    return write_pdegym(tmp_path / "NS-Gauss.nc", "velocity", np.concatenate([velocity, tracer], 2))


def test_ns_velocity_comes_out_x_last_with_u_x_first(ns_file, velocity, tol):
    source = PDEGymSource(ns_file, cache=False)
    assert source.layout == "ns" and source.field_type == FieldType(["vector"])
    assert source.shape == (N, T, 2, GRID, GRID)
    data = torch.from_numpy(source.load(None))
    torch.testing.assert_close(data, torch.from_numpy(velocity).float(), **tol["fp32"])
    assert relative_divergence(data[0, 0]) < 1e-5
    assert source.symmetry_group.name == "D4xShifts" and source.diagnostic_group.name == "D4"
    assert len(source.symmetry_group) == 8 * GRID**2


def test_ns_tracer_is_an_extra_scalar(ns_file):
    source = PDEGymSource(ns_file, tracer=True, cache=False)
    assert source.field_type == FieldType(["vector", "scalar"])
    with h5py.File(ns_file) as file:
        stored = file["velocity"][1, 2, 2]  # (x, y)
    assert np.array_equal(source.load(None)[1, 2, 2], stored.T)


def test_axes_that_contradict_incompressibility_are_refused(tmp_path, velocity):
    wrong = write_pdegym(tmp_path / "NS-y-first.nc", "velocity", velocity, x_first=False)
    with pytest.raises(ValueError, match="pass x_first=False") as error:
        PDEGymSource(wrong)
    assert "\n" not in str(error.value)
    assert relative_divergence(torch.from_numpy(velocity[0, 0]).transpose(-1, -2)) > 0.1
    source = PDEGymSource(wrong, x_first=False, cache=False)
    assert relative_divergence(torch.from_numpy(source.load(None)[0, 0])) < 1e-5


def test_ce_conserved_and_primitive_variables(tmp_path):
    rng = np.random.default_rng(2)
    rho = 1 + rng.random((N, T, 1, GRID, GRID))
    ux, uy, p, energy = rng.normal(size=(4, N, T, 1, GRID, GRID))
    stored = np.concatenate([rho, ux, uy, p, energy], axis=2)
    path = write_pdegym(tmp_path / "CE-RP.nc", "data", stored)
    conserved = PDEGymSource(path, cache=False)
    assert conserved.layout == "ce"
    assert conserved.field_type == FieldType(["scalar", "vector", "scalar"])
    data = conserved.load(None)
    expected = np.concatenate([rho, rho * ux, rho * uy, energy], axis=2).astype(np.float32)
    np.testing.assert_allclose(data, expected, rtol=1e-6)
    primitive = PDEGymSource(path, variables="primitive", cache=False).load(None)
    np.testing.assert_allclose(primitive, stored[:, :, :4].astype(np.float32), rtol=1e-6)


def test_window_cache_and_errors(tmp_path, ns_file):
    source = PDEGymSource(ns_file, num_trajectories=2, first_frame=1)
    path = source.prepare(tmp_path / "cache", progress=False)
    assert path.name.startswith("pdegym-")
    direct = PDEGymSource(ns_file, num_trajectories=2, first_frame=1, cache=False).load(None)
    assert direct.shape == (2, T - 1, 2, GRID, GRID)
    assert np.array_equal(source.load(tmp_path / "cache"), direct)
    with pytest.raises(ValueError, match="has no variable 'data'"):
        PDEGymSource(ns_file, "ce")
    with pytest.raises(ValueError, match="variables must be one of"):
        PDEGymSource(ns_file, variables="entropy")
    with pytest.raises(FileNotFoundError, match="no PDEGym file"):
        PDEGymSource(tmp_path / "missing.nc")
