"""Navier–Stokes solver throughput against an FFT-only ceiling measured in the same run.

Per step the solver makes, for each of its 3 Runge–Kutta substages, one inverse real FFT of the
stacked fields (u_x, u_y, ∂x ω, ∂y ω) and one forward real FFT of the advection term. The ceiling runs
exactly those rfft2/irfft2 calls on the same shapes and nothing else. Prints grid-point-steps/s and
the ratio solver/ceiling (target ≥ 0.5) for 64² and 128², batch 1 and 16, float32, one thread by
default, with the load average before and after.

Solver and ceiling rounds alternate and each keeps its best round. On the CPU with one thread the
clock is the process's CPU time, so that time slices lost to other processes on a shared machine
count against neither side; otherwise it is wall time (synchronized on CUDA).

    python benchmarks/bench_navier_stokes.py [--device cuda] [--threads 2]
"""

import argparse
import os
import time
from functools import partial

import torch

from symcoherence.data import NavierStokes2D, initial_vorticity

STAGES = 3


def solve(solver, omega_hat, operators, steps):
    for _ in range(steps):
        omega_hat = solver._step(omega_hat, 1e-4, operators)
    return omega_hat


def ceiling(spectrum, physical, n, steps):
    for _ in range(steps * STAGES):
        torch.fft.irfft2(spectrum, s=(n, n))
        torch.fft.rfft2(physical)


def interleaved_best(functions, device, rounds, clock):
    """Best time of each function over ``rounds`` rounds that alternate between them, so that a
    busy machine slows both sides of a ratio alike."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for function in functions:
        function()
    sync()
    best = [float("inf")] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            start = clock()
            function()
            sync()
            best[index] = min(best[index], clock() - start)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu_time = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.process_time if cpu_time else time.perf_counter
    print(
        f"device={device} threads={torch.get_num_threads()} dtype=float32 "
        f"clock={'process CPU time' if cpu_time else 'wall'} "
        f"load average before={os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'grid':>6} {'batch':>5} {'solver pts·steps/s':>20} {'ceiling pts·steps/s':>20} {'ratio':>6}"
    )
    for n in (64, 128):
        for batch in (1, 16):
            solver = NavierStokes2D(n, 1e-3, dt=1e-4).to(device)
            omega0 = initial_vorticity("gaussian_random_field", n, range(batch)).float().to(device)
            operators = solver._operators(omega0)
            omega_hat = torch.fft.rfft2(omega0)

            stacked = torch.fft.irfft2(omega_hat.unsqueeze(-3) * operators["fields"], s=(n, n))
            spectrum = torch.fft.rfft2(stacked)
            physical = stacked[..., 0, :, :].contiguous()
            run_solver = partial(solve, solver, omega_hat, operators, args.steps)
            run_ceiling = partial(ceiling, spectrum, physical, n, args.steps)
            solver_time, ceiling_time = (
                seconds / args.steps
                for seconds in interleaved_best(
                    (run_solver, run_ceiling), device, args.rounds, clock
                )
            )
            points = batch * n * n
            print(
                f"{n:>4}² {batch:>5} {points / solver_time:>20.3e} {points / ceiling_time:>20.3e} "
                f"{ceiling_time / solver_time:>6.2f}"
            )
    print(f"load average after={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
