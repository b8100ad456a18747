import pytest
import torch

from symcoherence.data import (
    ArraySource,
    NavierStokesDataModule,
    NavierStokesSource,
    TrajectoryDataModule,
)
from symcoherence.data.navier_stokes import source as module
from symcoherence.groups import D4, FieldType

TINY = dict(
    n=16,
    num_trajectories=8,
    num_frames=4,
    frame_interval=0.05,
    burn_in=0.0,
    val_fraction=0.25,
    test_fraction=0.25,
    progress=False,
    solver_dtype="float64",
)


def tiny(tmp_path, **kwargs):
    return NavierStokesDataModule(cache_dir=str(tmp_path), **{**TINY, **kwargs})


def test_splits_are_disjoint_reproducible_and_seeded(tmp_path):
    data = tiny(tmp_path)
    data.setup()
    parts = [set(data.splits[s].tolist()) for s in ("train", "val", "test")]
    assert sorted(set().union(*parts)) == list(range(8)) and sum(map(len, parts)) == 8
    again = tiny(tmp_path)
    again.setup()
    assert all(torch.equal(data.splits[s], again.splits[s]) for s in data.splits)
    torch.testing.assert_close(data.probe_batch(2), again.probe_batch(2), rtol=0, atol=0)
    assert [len(data.dataset(s)) for s in ("train", "val", "test")] == [12, 6, 6]
    inputs, targets = next(iter(data.train_dataloader()))
    assert inputs.dtype == targets.dtype == torch.float32 and inputs.shape[1:] == (1, 16, 16)


def test_probe_batch_uses_distinct_trajectories(tmp_path):
    data = tiny(tmp_path, history=2)
    inputs, targets = data.probe_batch(2, split="val", seed=3)
    assert inputs.shape == (2, 2, 16, 16) and targets.shape == (2, 1, 16, 16)
    frames = data.data[data.splits["val"]]
    owners = [
        [t for t in range(2) if any(torch.equal(x[-1:], frames[t, s]) for s in range(4))]
        for x in inputs
    ]
    assert sorted(o[0] for o in owners) == [0, 1]
    with pytest.raises(ValueError, match="distinct trajectories"):
        data.probe_batch(3)


def test_rollout_batch_continues_the_input_frames(tmp_path):
    data = tiny(tmp_path, history=2)
    x0, trajectory = data.rollout_batch(2)
    frames = data.data[data.splits["val"]]
    assert torch.equal(x0, frames[:, :2].flatten(1, 2))
    assert torch.equal(trajectory, frames[:, 2:4])
    # the last input frame is followed by the first frame of the continuation, as a pair
    x, y = data.dataset("val").pair(0)
    assert torch.equal(x, x0[0]) and torch.equal(y, trajectory[0, 0])
    with pytest.raises(ValueError, match="at least 12 frames"):
        data.rollout_batch(10)


@pytest.mark.parametrize("fields", ["vorticity", "velocity"])
def test_augmented_pair_is_an_exact_solver_pair(tmp_path, fields):
    data = tiny(
        tmp_path,
        fields=fields,
        forcing="kolmogorov",
        forcing_wavenumber=1,
        drag=0.5,
        forcing_amplitude=5.0,
        augment_group="default",
    )
    data.setup()
    assert data.augment_group.name == "Kolmogorov"
    pairs = data.dataset("train", augment=True)
    solver = data.source.solver
    for index in range(len(pairs)):
        inputs, targets = pairs[index]
        x, y = data.denormalize(inputs).double(), data.denormalize(targets).double()
        omega = solver.vorticity(x) if fields == "velocity" else x[0]
        predicted = solver.rollout(omega, [0.05])[-1]
        reference = solver.vorticity(y) if fields == "velocity" else y[0]
        # float32 storage of the frames limits the agreement
        torch.testing.assert_close(
            predicted, reference, rtol=0, atol=1e-4 * float(reference.abs().max())
        )
    # negative control: an inadmissible element (quarter turn) does not give a solver pair
    x, y = pairs.pair(0)
    x, y = (data.denormalize(D4().act("r", v, data.target_field_type)).double() for v in (x, y))
    omega = solver.vorticity(x) if fields == "velocity" else x[0]
    reference = solver.vorticity(y) if fields == "velocity" else y[0]
    assert (
        solver.rollout(omega, [0.05])[-1] - reference
    ).abs().max() > 1e-3 * reference.abs().max()


def test_augmentation_is_seeded_and_varies(tmp_path):
    data = tiny(tmp_path, augment_group="D4")
    data.setup()
    first = data.dataset("train", augment=True)[0]
    again = data.dataset("train", augment=True)
    draws = [again[0] for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, draws[0], strict=True))
    assert any(not torch.equal(draws[0][0], d[0]) for d in draws[1:])
    # every draw is one D4 element applied to both halves of the unaugmented pair
    x, y = data.dataset("train").pair(0)
    orbit = [
        (D4().act(g, x, data.field_type), D4().act(g, y, data.target_field_type)) for g in D4()
    ]
    for inputs, targets in draws:
        assert any(torch.equal(inputs, gx) and torch.equal(targets, gy) for gx, gy in orbit)


def test_normalization_commutes_with_the_group():
    trajectories = (
        torch.randn(6, 3, 4, 8, 8) * torch.tensor([3.0, 0.5, 2.0, 1.0])[:, None, None] + 5
    )
    frame_field_type = FieldType(["vector", "scalar", "pseudoscalar"])
    source = ArraySource(trajectories, frame_field_type, symmetry_group=D4())
    data = TrajectoryDataModule(source, val_fraction=0.2, test_fraction=0.2)
    data.setup()
    assert data.scale[0] == data.scale[1] and data.offset[[0, 1, 3]].eq(0).all()
    assert data.offset[2] != 0

    def normalize(x):
        return (x - data.offset[:, None, None]) / data.scale[:, None, None]

    x = trajectories[0, 0]
    for element in D4().elements:
        torch.testing.assert_close(
            normalize(D4().act(element, x, frame_field_type)),
            D4().act(element, normalize(x), frame_field_type),
            rtol=0,
            atol=0,
        )
    torch.testing.assert_close(data.denormalize(normalize(x)), x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dt=0.5), "unstable"),
        (dict(forcing="poiseuille"), "unknown forcing"),
        (dict(initial_condition="turbulence"), "unknown initial_condition"),
        (dict(fields="pressure"), "fields"),
        (dict(anisotropy=0.5), "anisotropy"),
        (dict(num_frames=1), "num_frames"),
        (dict(num_frames=2, history=2), "leaves no target"),
        (dict(num_trajectories=2, val_fraction=0.5, test_fraction=0.4), "none for training"),
        (dict(batch_size=0), "batch_size"),
        (dict(val_fraction=0.6, test_fraction=0.5), "val_fraction"),
        (dict(augment_group="SO3"), "unknown group"),
        (dict(forcing="kolmogorov", viscosity=0.0), "viscosity > 0 or drag > 0"),
    ],
)
def test_bad_configuration_fails_before_any_compute(tmp_path, monkeypatch, kwargs, match):
    monkeypatch.setattr(module.NavierStokes2D, "rollout", lambda *a: pytest.fail("computed"))
    with pytest.raises(ValueError, match=match):
        tiny(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_cache_is_reused_and_blow_up_never_reaches_a_file(tmp_path, monkeypatch):
    tiny(tmp_path).prepare_data()
    monkeypatch.setattr(module.NavierStokes2D, "rollout", lambda *a: pytest.fail("regenerated"))
    tiny(tmp_path).setup()
    monkeypatch.undo()
    monkeypatch.setattr(module, "_PEAK", 0.02)  # fool the construction-time CFL estimate
    exploding = tiny(
        tmp_path / "x", forcing="kolmogorov", forcing_amplitude=50.0, forcing_wavenumber=1, drag=0.5
    )
    with pytest.raises(ValueError, match="CFL"):
        exploding.prepare_data()
    assert not list((tmp_path / "x").glob("*.h5"))


def test_convenience_is_the_pipeline_on_a_source(tmp_path):
    data = tiny(tmp_path, history=2, split_seed=3)
    assert type(data.source) is NavierStokesSource and data.source.n == 16
    explicit = TrajectoryDataModule(
        NavierStokesSource(
            n=16, num_trajectories=8, num_frames=4, burn_in=0.0, solver_dtype="float64"
        ),
        history=2,
        split_seed=3,
        val_fraction=0.25,
        test_fraction=0.25,
        cache_dir=str(tmp_path),
        progress=False,
    )
    assert explicit.source == data.source
    data.setup()
    explicit.setup()
    assert data.path == explicit.path and torch.equal(data.data, explicit.data)
    assert all(torch.equal(data.splits[s], explicit.splits[s]) for s in data.splits)
    given = NavierStokesDataModule(source=explicit.source, history=2, cache_dir=str(tmp_path))
    assert given.source is explicit.source


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: NavierStokesDataModule(viscosty=0.1), TypeError, "did you mean 'viscosity'"),
        (
            lambda: NavierStokesDataModule(source=NavierStokesSource(n=16), n=32),
            TypeError,
            "not both",
        ),
        (lambda: NavierStokesDataModule(source="ns"), TypeError, "needs a NavierStokesSource"),
        (lambda: TrajectoryDataModule({"n": 32}), TypeError, "class_path"),
        (lambda: TrajectoryDataModule(NavierStokesSource(n=16), history=0), ValueError, "history"),
    ],
)
def test_wrong_arguments_say_what_was_expected(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_declared_types_and_groups(tmp_path):
    data = tiny(tmp_path, history=3, fields="velocity")
    assert data.frame_field_type == data.target_field_type == FieldType(["vector"])
    assert data.field_type == FieldType(["vector"]).repeat(3)
    assert (data.in_channels, data.out_channels) == (6, 2)
    assert data.diagnostic_group.elements == D4().elements
    assert data.symmetry_group.name == "D4xShifts" and len(data.symmetry_group) == 8 * 16**2
    assert set(data.diagnostic_group.elements) <= set(data.symmetry_group.elements)
    assert not list(tmp_path.iterdir())  # declaring types generates nothing
