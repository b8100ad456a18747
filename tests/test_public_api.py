"""The public names of DESIGN §2.1 exist where users look for them and keep their meaning."""

import torch

import symcoherence as sc


def test_groups_and_field_types():
    velocity = sc.FieldType(["vector"])
    assert sc.FieldType(["pseudoscalar"]).repeat(4).num_channels == 4
    group = sc.groups.Product(sc.groups.C4(), sc.groups.Shifts(box=1, period=8))
    assert group.name == "C4xShifts" and group.elements[0] == "e"
    assert sc.groups.D4().name == "D4"
    field = torch.randn(3, 2, 8, 8)
    assert group.orbit(field, velocity).shape == (len(group), 3, 2, 8, 8)
    assert group.is_exact(group.compose("r", group.inverse("r")))


def test_engine_entry_points_agree_with_each_other():
    model = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    scalar = sc.FieldType(["scalar"])
    grads = sc.per_sample_grads(model, sc.smse, x, y)
    assert grads["weight"].shape == (4, 1, 1, 3, 3)
    result = sc.orbit_influence(
        model, sc.smse, x, y, sc.groups.C4(), field_type=scalar, metric=sc.coherence.Identity()
    )
    assert isinstance(result, sc.OrbitInfluence) and result.matrix.shape == (4, 4, 4)
    # the identity element's raw influence is the Gram matrix of the per-sample gradients
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    torch.testing.assert_close(result.matrix[0], flat @ flat.T, rtol=1e-5, atol=1e-7)
    errors = sc.equivariance_error(model, sc.smse, x, y, sc.groups.C4(), field_type=scalar)
    assert errors.shape == (4, 4) and torch.allclose(errors[0], torch.ones(4))
    assert isinstance(
        sc.coherence.GaussNewton(damping=1e-4, solver="subspace"), sc.coherence.Metric
    )


def test_solver_datamodule_models_and_callback_are_reachable():
    solver = sc.data.NavierStokes2D(16, viscosity=1e-2)
    x = torch.arange(16, dtype=torch.float64) / 16
    omega0 = torch.stack(
        [torch.sin(2 * torch.pi * x)[None, :] * torch.cos(4 * torch.pi * x)[:, None]] * 2
    )
    trajectory = solver.rollout(omega0, torch.tensor([0.0, 0.01]))
    assert trajectory.shape == (2, 2, 16, 16)
    torch.testing.assert_close(solver.vorticity(solver.velocity(omega0)), omega0)
    data = sc.data.NavierStokesDataModule(n=16)
    assert data.diagnostic_group.name == "D4"  # what the monitor measures by default
    assert len(data.symmetry_group.elements) == 8 * 16**2  # every rotation, reflection and shift
    assert all(element in data.symmetry_group for element in ("e", "r", "sr3"))
    for name in ("UNet2d", "FNO2d", "ViT2d", "GroupAveraged", "EmulatorModule"):
        assert hasattr(sc.models, name)
    assert issubclass(sc.OrbitCoherenceMonitor, __import__("lightning").pytorch.Callback)
