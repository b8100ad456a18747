"""The pinned torch / torch-harmonics pair imports together and runs a spherical transform."""

import math

import torch

from symcoherence.testing import TOLERANCES as TOL


def test_torch_harmonics_round_trip_of_a_band_limited_field():
    import torch_harmonics as th

    nlat, nlon = 16, 32
    sht = th.RealSHT(nlat, nlon, grid="equiangular").to(torch.float64)
    isht = th.InverseRealSHT(nlat, nlon, grid="equiangular").to(torch.float64)
    theta = torch.linspace(0, math.pi, nlat, dtype=torch.float64)[:, None]
    phi = torch.arange(nlon, dtype=torch.float64)[None, :] * 2 * math.pi / nlon
    # Y_2^1 (real part), up to normalisation: a low-degree harmonic is reproduced exactly
    field = torch.sin(theta) * torch.cos(theta) * torch.cos(phi)
    torch.testing.assert_close(isht(sht(field)), field, **TOL["fp64"])
