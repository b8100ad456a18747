"""Rollout metrics against values computed by hand."""

import math

import pytest
import torch

from symcoherence.models.rollout_metrics import (
    autoregressive_rollout,
    correlation_time,
    nrmse,
    pearson_correlation,
    radial_energy_spectrum,
    spectrum_error,
)
from symcoherence.testing import TOLERANCES as TOL


def _trajectory(batch=2, steps=4, channels=2, grid=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, channels, grid, grid, generator=generator, dtype=torch.float64)


def test_nrmse_perfect_zero_and_scaled_models():
    truth = _trajectory()
    assert torch.equal(nrmse(truth, truth), torch.zeros(2, 4, dtype=torch.float64))
    torch.testing.assert_close(nrmse(torch.zeros_like(truth), truth), torch.ones(2, 4).double())
    torch.testing.assert_close(nrmse(1.5 * truth, truth), torch.full((2, 4), 0.5).double())


def test_nrmse_of_a_hand_computed_pair():
    truth = torch.tensor([3.0, 4.0]).reshape(1, 2, 1)  # ‖y‖ = 5
    prediction = torch.tensor([3.0, 1.0]).reshape(1, 2, 1)  # ‖ŷ − y‖ = 3
    assert float(nrmse(prediction, truth)) == pytest.approx(0.6, rel=TOL["fp32"]["rtol"])


def test_pearson_correlation_known_values():
    truth = _trajectory()
    torch.testing.assert_close(pearson_correlation(2 * truth + 1, truth), torch.ones(2, 4).double())
    torch.testing.assert_close(pearson_correlation(-truth, truth), -torch.ones(2, 4).double())
    assert torch.equal(
        pearson_correlation(torch.ones_like(truth), truth), torch.zeros(2, 4).double()
    )


def test_correlation_time_counts_leading_steps_above_the_threshold():
    truth = _trajectory(batch=1, steps=5)
    noise = _trajectory(batch=1, steps=5, seed=1)
    # Step 3 (index 2) is uncorrelated noise; later steps are perfect again but do not count.
    prediction = truth.clone()
    prediction[:, 2] = noise[:, 2]
    assert correlation_time(prediction, truth, 0.9).tolist() == [2.0]
    assert correlation_time(truth, truth, 0.8).tolist() == [5.0]  # perfect: the horizon
    assert correlation_time(torch.zeros_like(truth), truth, 0.8).tolist() == [0.0]


def test_correlation_time_depends_on_the_threshold():
    truth = _trajectory(batch=1, steps=3, channels=1, grid=16)
    noise = _trajectory(batch=1, steps=3, channels=1, grid=16, seed=5)
    # prediction_t = cos(a_t)·ŷ + sin(a_t)·n with ŷ the centred unit truth and n a centred unit
    # field orthogonal to it, so that its correlation with the truth is exactly cos(a_t).
    truth_centred = truth - truth.mean(dim=(-3, -2, -1), keepdim=True)
    unit = truth_centred / truth_centred.flatten(2).norm(dim=-1)[..., None, None, None]
    noise = noise - noise.mean(dim=(-3, -2, -1), keepdim=True)
    noise = noise - (noise * unit).sum(dim=(-3, -2, -1), keepdim=True) * unit
    noise = noise / noise.flatten(2).norm(dim=-1)[..., None, None, None]
    angle = torch.tensor([0.0, math.acos(0.85), math.acos(0.5)], dtype=torch.float64)
    prediction = angle.cos()[None, :, None, None, None] * unit
    prediction = prediction + angle.sin()[None, :, None, None, None] * noise
    correlation = pearson_correlation(prediction, truth)[0]
    torch.testing.assert_close(
        correlation, torch.tensor([1.0, 0.85, 0.5], dtype=torch.float64), **TOL["fp64"]
    )
    assert correlation_time(prediction, truth, 0.8).tolist() == [2.0]
    assert correlation_time(prediction, truth, 0.9).tolist() == [1.0]


def test_radial_spectrum_of_a_single_wave():
    grid = 16
    x = torch.arange(grid, dtype=torch.float64)
    # cos(2π·3x/N) along x: energy ¼ at κ = (±3, 0); shell 3 holds the modes with round(|κ|) = 3.
    wave = torch.cos(2 * math.pi * 3 * x / grid).expand(1, grid, grid)
    spectrum = radial_energy_spectrum(wave)
    ky, kx = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ky, kx = torch.where(ky > grid // 2, ky - grid, ky), torch.where(kx > grid // 2, kx - grid, kx)
    shell_size = int(((ky**2 + kx**2).double().sqrt().round() == 3).sum())
    expected = torch.zeros(grid // 2 + 1, dtype=torch.float64)
    expected[3] = 2 * 0.25 / shell_size
    torch.testing.assert_close(spectrum, expected, **TOL["fp64"])


def test_spectrum_error_known_values():
    truth = _trajectory()
    assert torch.equal(spectrum_error(truth, truth), torch.zeros(2, 4).double())
    torch.testing.assert_close(
        spectrum_error(torch.zeros_like(truth), truth), torch.ones(2, 4).double()
    )
    torch.testing.assert_close(spectrum_error(2 * truth, truth), torch.full((2, 4), 3.0).double())
    shifted = truth.roll((3, 1), dims=(-1, -2))  # phase only: same spectrum
    torch.testing.assert_close(
        spectrum_error(shifted, truth), torch.zeros(2, 4).double(), **TOL["fp64"]
    )


def test_rollout_feeds_predictions_back_through_the_history():
    # History of 2 frames; the model returns the sum of both frames: a Fibonacci sequence.
    x0 = torch.stack([torch.zeros(1, 1, 1), torch.ones(1, 1, 1)], dim=1).reshape(1, 2, 1, 1)
    trajectory = autoregressive_rollout(lambda x: x[:, :1] + x[:, 1:], x0, 5)
    assert trajectory.shape == (1, 5, 1, 1, 1)
    assert trajectory.flatten().tolist() == [1.0, 2.0, 3.0, 5.0, 8.0]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        nrmse(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least 5 dimensions"):
        correlation_time(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), 0.8)
    with pytest.raises(ValueError, match=r"C_in = k·C_out"):
        autoregressive_rollout(lambda x: x[:, :2], torch.zeros(1, 3, 4, 4), 2)
    with pytest.raises(ValueError, match="steps >= 1"):
        autoregressive_rollout(lambda x: x, torch.zeros(1, 1, 4, 4), 0)
