"""The fused RK3/Crank–Nicolson step equals a plain, term-by-term reference of the same scheme."""

import math

import pytest
import torch

from symcoherence.data import NavierStokes2D, initial_vorticity, make_forcing

GAMMA = (8 / 15, 5 / 12, 3 / 4)
ZETA = (0.0, -17 / 60, -5 / 12)


def reference_step(omega_hat, h, n, viscosity, drag, forcing_field):
    """One Spalart–Moser–Rogers step written from the equations, one FFT per field, float64."""
    integers_y = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)[:, None]
    integers_x = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)[None, :]
    nyquist_y = (integers_y == -(n // 2)) & (n % 2 == 0)
    nyquist_x = (integers_x == n // 2) & (n % 2 == 0)
    ky, kx = 2 * math.pi * integers_y, 2 * math.pi * integers_x
    k2 = kx**2 + ky**2
    psi_over_omega = torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0)
    dx = 1j * torch.where(nyquist_x, 0.0, kx)
    dy = 1j * torch.where(nyquist_y, 0.0, ky)
    mask = 3 * torch.maximum(integers_y.abs(), integers_x.abs()) < n
    linear = -viscosity * k2 - drag
    forcing_hat = torch.fft.rfft2(forcing_field)

    def grid(spectrum):
        return torch.fft.irfft2(spectrum, s=(n, n))

    def tendency(w):
        psi = w * psi_over_omega
        u_x, u_y = grid(dy * psi), grid(-dx * psi)
        advection = u_x * grid(dx * w) + u_y * grid(dy * w)
        return forcing_hat - mask * torch.fft.rfft2(advection)

    previous = None
    for gamma, zeta in zip(GAMMA, ZETA, strict=True):
        beta = (gamma + zeta) / 2
        current = tendency(omega_hat)
        right = (1 + beta * h * linear) * omega_hat + gamma * h * current
        if zeta:
            right = right + zeta * h * previous
        omega_hat, previous = right / (1 - beta * h * linear), current
    return omega_hat


CASES = [
    (None, 16, 0.0, (2,)),
    (None, 15, 0.05, (2, 3)),
    ("kolmogorov", 16, 0.05, ()),
    ("diagonal", 15, 0.1, (3,)),
]


def case(forcing, n, drag):
    forcing = make_forcing(forcing, n, wavenumber=1) if forcing else None
    solver = NavierStokes2D(n, 5e-3, forcing=forcing, drag=drag, dt=0.01)
    field = torch.zeros(n, n, dtype=torch.float64) if forcing is None else forcing.field
    return solver, field


@pytest.mark.parametrize("forcing,n,drag,batch", CASES)
def test_fused_steps_equal_the_reference_to_fp64_round_off(forcing, n, drag, batch):
    solver, field = case(forcing, n, drag)
    count = math.prod(batch)
    omega = initial_vorticity("gaussian_random_field", n, seeds=range(count)).reshape(*batch, n, n)
    operators = solver._operators(omega)
    fused = expected = torch.fft.rfft2(omega)
    for h in (0.01, 0.01, 0.004):  # a cached and a second step size
        fused = solver._step(fused, h, operators)
        expected = reference_step(expected, h, n, solver.viscosity, drag, field)
    assert fused.shape == expected.shape and fused.dtype == torch.complex128
    error = (fused - expected).abs().max() / expected.abs().max()
    assert float(error) <= 1e-13


@pytest.mark.parametrize("forcing,n,drag,batch", CASES[1:3])
def test_float32_step_stays_float32_and_tracks_the_fp64_reference(forcing, n, drag, batch):
    solver, field = case(forcing, n, drag)
    omega = initial_vorticity("gaussian_random_field", n, seeds=[1])[0].expand(*batch, n, n)
    operators = solver._operators(omega.float())
    fused = torch.fft.rfft2(omega.float())
    expected = torch.fft.rfft2(omega)
    for _ in range(5):
        fused = solver._step(fused, 0.01, operators)
        expected = reference_step(expected, 0.01, n, solver.viscosity, drag, field)
    assert fused.dtype == torch.complex64
    assert all(
        c is None or c.dtype == torch.complex64 for s in operators["stages"][0.01] for c in s
    )
    error = (fused.to(torch.complex128) - expected).abs().max() / expected.abs().max()
    assert float(error) <= 1e-5


def test_step_leaves_its_input_untouched_and_is_differentiable():
    solver, _ = case("kolmogorov", 16, 0.05)
    omega = initial_vorticity("gaussian_random_field", 16, seeds=[2]).requires_grad_()
    omega_hat = torch.fft.rfft2(omega)
    before = omega_hat.detach().clone()
    stepped = solver._step(omega_hat, 0.01, solver._operators(omega))
    assert torch.equal(omega_hat.detach(), before)
    (gradient,) = torch.autograd.grad(torch.fft.irfft2(stepped, s=(16, 16)).pow(2).sum(), omega)
    assert bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) > 0
