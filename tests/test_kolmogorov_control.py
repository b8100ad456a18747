"""The Kolmogorov control of the controlled experiment is a real control: with the TRUE solver,
the D4 elements that do not fix the forcing break the one-step map by more than one frame's
change, and the admissible ones commute with it to float64 precision.

The forward error of the exact map, ``E(g) = loss(S(g·x), g·S(x)) / loss(S(x), S(x))``, is 0/0, so
the test measures the one-step defect relative to the step's own increment,

    d(g) = ‖S(g·x) − g·S(x)‖ / ‖S(x) − x‖,

on states of the configured flow (``configs/experiment/kolmogorov.yaml``, 16² grid, float64, after
its burn-in). A model with relative one-step error ``ε = ‖f(x) − S(x)‖ / ‖S(x) − x‖`` that is
right on ``g·x`` has ``E(g) ≈ (d(g)² + ε²) / ε²`` against the targets ``g·y``.
"""

from pathlib import Path

import pytest
import torch
import yaml

import symcoherence as sc
from symcoherence.data import NavierStokesSource, initial_vorticity
from symcoherence.testing import TOLERANCES

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "experiment" / "kolmogorov.yaml"
INADMISSIBLE = ("r", "r2", "r3", "s", "sr", "sr3")
ADMISSIBLE = ("e", "sr2")
# d(g) > 1: the image g·S(x) is farther from the true next state S(g·x) than the current state
# g·x is, i.e. an inadmissible element moves the target by more than one frame's change. The
# experiment's trained emulators (400 steps, experiments/RESULTS.md "Kolmogorov control") have a
# relative one-step error ε ≈ 0.9, so the measured d = 1.25 (r, r3, sr, sr3) and 1.77 (r2, s)
# exceed it by 1.4-2x: E(g) ≈ (d² + ε²)/ε² ≈ 3-5, visible but not ≫ 1.
MIN_DEFECT = 1.0


def configured_source(n: int = 16, trajectories: int = 2) -> NavierStokesSource:
    """The Kolmogorov source of the experiment config on a small grid, simulated in float64."""
    physics = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]["source"]["init_args"]
    return NavierStokesSource(
        n=n, num_trajectories=trajectories, num_frames=2, solver_dtype="float64", **physics
    )


@pytest.fixture(scope="module")
def defects() -> dict[str, torch.Tensor]:
    # module-scoped: runs before the per-test one-thread fixture of conftest, so set it here (a
    # second intra-op thread makes these small FFTs many times slower on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _defects()
    finally:
        torch.set_num_threads(threads)


def _defects() -> dict[str, torch.Tensor]:
    source = configured_source()
    solver = source.solver
    interval = float(source.frame_interval)
    # states after the configured burn-in, simulated in float64 (``generate`` stores float32)
    omega0 = initial_vorticity(
        source.initial_condition,
        source.n,
        source.trajectory_seeds(0, 2),
        anisotropy=source.anisotropy,
        velocity_rms_target=source.velocity_rms,
    ).double()
    x = solver.rollout(omega0, [0.0, source.burn_in])[-1]

    def step(omega: torch.Tensor) -> torch.Tensor:
        return solver.rollout(omega, [0.0, interval])[-1]

    d4, kind = sc.groups.D4(), sc.FieldType(["pseudoscalar"])
    sx = step(x)
    increment = (sx - x).flatten(1).norm(dim=1)
    out = {}
    for element in d4.elements:
        gx = d4.act(element, x[:, None], kind)[:, 0]
        g_sx = d4.act(element, sx[:, None], kind)[:, 0]
        out[element] = (step(gx) - g_sx).flatten(1).norm(dim=1) / increment
    return out


def test_configured_flow_is_forced_and_declares_the_kolmogorov_subgroup():
    source = configured_source()
    assert source.forcing == "kolmogorov"
    group = source.diagnostic_group
    assert group.name == "Kolmogorov"
    point_parts = {name.split("|")[0] for name in group.elements}
    assert point_parts == {"e", "sr2", "r2", "s"}  # r2 and s only as glide reflections


def test_admissible_elements_commute_with_the_true_solver(defects):
    for element in ADMISSIBLE:
        assert float(defects[element].max()) < TOLERANCES["fp64"]["rtol"], element


def test_inadmissible_elements_break_the_one_step_map(defects):
    for element in INADMISSIBLE:
        smallest = float(defects[element].min())
        assert smallest > MIN_DEFECT, (element, smallest)
