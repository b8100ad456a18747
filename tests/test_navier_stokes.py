import math

import pytest
import torch

from symcoherence.data import NavierStokes2D, initial_vorticity, make_forcing
from symcoherence.groups import D4, FieldType
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing import tolerance_for

VORTICITY = FieldType(["pseudoscalar"])
VELOCITY = FieldType(["vector"])


def grid(n):
    coordinate = torch.arange(n, dtype=torch.float64) / n
    y, x = torch.meshgrid(coordinate, coordinate, indexing="ij")
    return x, y


def taylor_green_error(dt, nu=0.05, n=16, t=1.0):
    x, y = grid(n)
    omega0 = 4.0 * torch.sin(2 * math.pi * x) * torch.sin(2 * math.pi * y)
    final = NavierStokes2D(n, nu, dt=dt).rollout(omega0, [t])[-1]
    exact = omega0 * math.exp(-nu * 2 * (2 * math.pi) ** 2 * t)
    return float((final - exact).abs().max() / exact.abs().max())


def test_taylor_green_decay_and_second_order_convergence():
    errors = [taylor_green_error(dt) for dt in (0.1, 0.05, 0.025)]
    assert errors[-1] < 1e-3
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert min(orders) >= 2 - 0.1, orders


def test_stream_function_sign_convention():
    x, _ = grid(12)
    omega = torch.sin(2 * math.pi * x)  # psi = sin(2πx) / 4π², u = (∂y ψ, −∂x ψ)
    u = NavierStokes2D(12, 0.0).velocity(omega)
    torch.testing.assert_close(u[0], torch.zeros_like(x), **TOL["fp64"])
    torch.testing.assert_close(u[1], -torch.cos(2 * math.pi * x) / (2 * math.pi), **TOL["fp64"])


@pytest.mark.parametrize("n", [12, 13])
def test_vorticity_of_transformed_velocity_is_transformed_vorticity(n):
    solver = NavierStokes2D(n, 1e-3)
    omega = initial_vorticity("gaussian_random_field", n, seeds=[0, 1])
    u = solver.velocity(omega)
    torch.testing.assert_close(solver.vorticity(u), omega, **TOL["fp64"])
    for element in D4().elements:
        moved_u = D4().act(element, u, VELOCITY)
        moved_omega = D4().act(element, omega[:, None], VORTICITY)[:, 0]
        torch.testing.assert_close(solver.vorticity(moved_u), moved_omega, **TOL["fp64"])
    # negative control: components swapped relative to the axes break it for r
    swapped = D4().act("r", u.flip(-3), VELOCITY).flip(-3)
    expected = D4().act("r", omega[:, None], VORTICITY)[:, 0]
    assert (solver.vorticity(swapped) - expected).abs().max() > 0.1 * expected.abs().max()


def test_dealias_mask_is_d4_invariant_and_drops_nyquist():
    for n in (12, 13):
        solver = NavierStokes2D(n, 0.0)
        mask = torch.fft.irfft2(solver._dealias.to(torch.complex128), s=(n, n))  # its kernel
        for element in D4().elements:
            torch.testing.assert_close(
                D4().act(element, mask[None], FieldType(["scalar"]))[0], mask, **TOL["fp64"]
            )
    assert not NavierStokes2D(12, 0.0)._dealias[6].any()  # the ky = -n/2 row


CASES = [
    (None, 8, 4),
    (None, 9, 4),
    ("kolmogorov", 16, 4),
    ("kolmogorov", 15, 4),
    ("kolmogorov", 16, 1),
    ("diagonal", 16, 1),
    ("diagonal", 15, 1),
]


def declared_commutation_error(solver, group, omega, times):
    orbit = group.orbit(omega[None], VORTICITY)[:, 0]
    moved_then_solved = solver.rollout(orbit, times)[-1]
    solved_then_moved = group.orbit(solver.rollout(omega, times)[-1][None], VORTICITY)[:, 0]
    difference = (moved_then_solved - solved_then_moved).flatten(1).norm(dim=1)
    return difference / solved_then_moved.flatten(1).norm(dim=1)


@pytest.mark.parametrize("forcing,n,k", CASES)
def test_solver_commutes_with_every_declared_element(forcing, n, k):
    solver = NavierStokes2D(
        n,
        5e-3,
        forcing=make_forcing(forcing, n, wavenumber=k) if forcing else None,
        drag=0.05,
        dt=0.01,
    )
    omega = initial_vorticity("gaussian_random_field", n, seeds=[n])[0]
    group = solver.symmetry_group
    assert set(solver.diagnostic_group.elements) <= set(group.elements)
    errors = declared_commutation_error(solver, group, omega, [0.3])
    assert float(errors.max()) <= 1e-12, group.elements[int(errors.argmax())]
    # the velocity view transforms as a vector
    element = group.elements[-1]
    u = solver.velocity(solver.rollout(omega, [0.3])[-1])
    moved = solver.velocity(
        solver.rollout(group.act(element, omega[None], VORTICITY)[0], [0.3])[-1]
    )
    torch.testing.assert_close(
        moved, group.act(element, u, VELOCITY), rtol=0, atol=1e-12 * float(u.abs().max())
    )


@pytest.mark.parametrize(
    "forcing,element", [("kolmogorov", "r"), ("kolmogorov", "s"), ("diagonal", "s")]
)
def test_negative_control_an_inadmissible_element_fails(forcing, element):
    n = 16
    solver = NavierStokes2D(
        n, 5e-3, forcing=make_forcing(forcing, n, wavenumber=1), drag=0.05, dt=0.01
    )
    assert element not in solver.symmetry_group
    omega = initial_vorticity("gaussian_random_field", n, seeds=[3])[0]
    errors = declared_commutation_error(solver, D4().subgroup(["e", element]), omega, [0.5])
    assert float(errors[1]) > 1e-3


def test_kolmogorov_diagnostic_group_is_small_and_closed():
    solver = NavierStokes2D(16, 1e-3, forcing=make_forcing("kolmogorov", 16, wavenumber=1))
    group = solver.diagnostic_group
    assert (group.name, set(group.elements)) == ("Kolmogorov", {"e", "sr2", "r2|x0y8", "s|x0y8"})
    for a in group.elements:
        for b in group.elements:
            assert group.compose(a, b) in group
    assert NavierStokes2D(16, 1e-3).diagnostic_group.elements == D4().elements
    assert len(NavierStokes2D(9, 1e-3).symmetry_group) == 8 * 81


def energy_enstrophy(solver, omega):
    u = solver.velocity(omega)
    return 0.5 * u.pow(2).sum(-3).mean((-2, -1)), 0.5 * omega.pow(2).mean((-2, -1))


def test_mean_vorticity_conserved_and_inviscid_invariants():
    n = 24
    omega0 = initial_vorticity("vortices", n, seeds=[1, 2]) + 0.3
    forcing = make_forcing("kolmogorov", n, wavenumber=2)
    forced = NavierStokes2D(n, 1e-3, forcing=forcing, dt=5e-3).rollout(omega0, [0.5])[-1]
    torch.testing.assert_close(forced.mean((-2, -1)), omega0.mean((-2, -1)), **TOL["fp64"])
    drifts = []
    for dt in (4e-3, 2e-3):
        solver = NavierStokes2D(n, 0.0, dt=dt)
        energy, enstrophy = energy_enstrophy(solver, solver.rollout(omega0, [0.0, 0.25]))
        drifts.append([float(((q[1] - q[0]) / q[0]).abs().max()) for q in (energy, enstrophy)])
    # the dealiased semi-discrete system conserves both exactly: what is left is the RK3 error
    for coarse, fine in zip(*drifts, strict=True):
        assert coarse < 1e-3 and fine < coarse / 4, drifts


def test_viscous_energy_decays_monotonically_and_budget_closes():
    n, nu, alpha = 24, 2e-3, 0.1
    forcing = make_forcing("kolmogorov", n, amplitude=2.0, wavenumber=2)
    times = torch.linspace(0, 0.5, 201)
    omega0 = initial_vorticity("gaussian_random_field", n, seeds=[4])
    decaying = NavierStokes2D(n, nu, dt=2.5e-3)
    energy, _ = energy_enstrophy(decaying, decaying.rollout(omega0, times))
    assert bool((energy[1:] < energy[:-1]).all())
    solver = NavierStokes2D(n, nu, forcing=forcing, drag=alpha, dt=2.5e-3)
    trajectory = solver.rollout(omega0, times)[:, 0]
    energy, enstrophy = energy_enstrophy(solver, trajectory)
    psi_hat = torch.fft.rfft2(trajectory) * torch.where(
        solver._linear < -alpha, 1.0 / ((-solver._linear - alpha) / nu), 0.0
    )
    power = (torch.fft.irfft2(psi_hat, s=(n, n)) * forcing.field).mean((-2, -1))
    rate = -2 * nu * enstrophy - 2 * alpha * energy + power
    integral = torch.trapezoid(rate, times.double())
    change = energy[-1] - energy[0]
    assert abs(float(integral - change)) < 1e-3 * float(power.abs().max() * 0.5)


def test_float32_and_batch_shapes():
    n = 16
    omega = initial_vorticity("sines", n, seeds=range(6)).reshape(2, 3, n, n)
    solver = NavierStokes2D(n, 1e-3, dt=5e-3)
    reference = solver.rollout(omega, [0.0, 0.1])
    single = solver.rollout(omega.float(), [0.0, 0.1])
    assert single.shape == (2, 2, 3, n, n) and single.dtype == torch.float32
    torch.testing.assert_close(
        single.double(), reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max())
    )
    torch.testing.assert_close(
        solver.rollout(omega[1, 2], [0.1])[0], reference[1, 1, 2], **tolerance_for(torch.float64)
    )


def test_unstable_configurations_raise_before_nans():
    n = 16
    omega = initial_vorticity("gaussian_random_field", n, seeds=[0])
    with pytest.raises(ValueError, match="initial CFL"):
        NavierStokes2D(n, 0.0, dt=1.0).rollout(omega, [1.0])
    blowing_up = NavierStokes2D(
        n, 0.0, forcing=make_forcing("kolmogorov", n, amplitude=5e3, wavenumber=1), dt=0.01
    )
    with pytest.raises(FloatingPointError, match="CFL number .* reached"):
        blowing_up.rollout(omega, torch.linspace(0, 1, 101))
    with pytest.raises(FloatingPointError, match="stopped being finite"):
        blowing_up.rollout(omega, [1.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        NavierStokes2D(n, 0.0).rollout(omega, [0.2, 0.1])
    with pytest.raises(ValueError, match="n=16"):
        NavierStokes2D(n, 0.0).velocity(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="resolve"):
        make_forcing("kolmogorov", 8, wavenumber=4)
