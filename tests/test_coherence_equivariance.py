"""Forward equivariance errors E_n(g) = loss(f(g x), g y) / loss(f(x), y) and the rollout version."""

import pytest
import torch
from helpers.zoo import PSEUDO, SCALAR, data, make  # noqa: F401

import symcoherence as sc
from symcoherence.testing import TOLERANCES as TOL

D4 = sc.groups.D4()
SHIFTS = sc.groups.Shifts(shifts=[(1, 0), (2, 3)])


def loop_errors(model, x, y, group, kind, elements):
    """The definition, one sample and one element at a time."""
    rows = []
    for g in elements:
        row = []
        for xn, yn in zip(x, y, strict=True):
            base = sc.smse(model(xn[None])[0], yn)
            moved = sc.smse(model(group.act(g, xn[None], kind))[0], group.act(g, yn, kind))
            row.append(moved / base)
        rows.append(torch.stack(row))
    return torch.stack(rows).detach()


def test_matches_the_definition_and_is_one_for_the_identity():
    model = make("group_norm")
    x, y = data()
    errors = sc.equivariance_error(model, sc.smse, x, y, D4, PSEUDO)
    assert errors.shape == (8, 4)
    torch.testing.assert_close(
        errors, loop_errors(model, x, y, D4, PSEUDO, D4.elements), **TOL["fp64"]
    )
    torch.testing.assert_close(errors[0], torch.ones(4, dtype=torch.float64), **TOL["exact"])
    assert (errors[1:] - 1).abs().max() > 1e-3  # zero padding is not D4-equivariant


def test_exactly_equivariant_model_gives_one_and_elements_select_rows():
    model = make("circular_conv")
    x, y = data()
    errors = sc.equivariance_error(model, sc.smse, x, y, SHIFTS, SCALAR, elements=["x2y3", "e"])
    torch.testing.assert_close(errors, torch.ones(2, 4, dtype=torch.float64), **TOL["fp64"])


def test_rollout_error_is_zero_for_equivariant_models_and_positive_otherwise():
    x, _ = data()
    equivariant = sc.rollout_equivariance_error(
        make("circular_conv"), sc.smse, x, SHIFTS, SCALAR, steps=3
    )
    assert equivariant.shape == (3, 4) and equivariant.abs().max() < 1e-20
    model = make("group_norm")
    broken = sc.rollout_equivariance_error(model, sc.smse, x, D4, PSEUDO, steps=2)
    assert broken[0].abs().max() == 0 and (broken[1:] > 1e-6).all()
    # the definition for one element: loss(f(f(g x)), g f(f(x)))
    with torch.no_grad():
        expected = torch.func.vmap(sc.smse)(
            model(model(D4.act("r", x, PSEUDO))), D4.act("r", model(model(x)), PSEUDO)
        )
    torch.testing.assert_close(broken[1], expected, **TOL["fp64"])


def test_bad_input():
    model = make("circular_conv")
    x, y = data()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sc.rollout_equivariance_error(model, sc.smse, x, SHIFTS, SCALAR, steps=0)
    with pytest.raises(ValueError, match="same number of samples"):
        sc.equivariance_error(model, sc.smse, x, y[:2], SHIFTS, SCALAR)
    with pytest.raises(ValueError, match="element list is empty"):
        sc.equivariance_error(model, sc.smse, x, y, SHIFTS, SCALAR, elements=[])
    widening = torch.nn.Conv2d(1, 2, 1).double()
    with pytest.raises(ValueError, match="map shape"):
        sc.rollout_equivariance_error(widening, sc.smse, x, SHIFTS, SCALAR, steps=1)
    with pytest.raises(ValueError, match="model.eval"):
        sc.equivariance_error(make("dropout_eval").train(), sc.smse, x, y, SHIFTS, SCALAR)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("group_norm", {}),  # layer hooks
        ("spectral", {}),  # vmap (complex weights)
        ("spectral", {"chunk_size": 1}),  # the per-sample loop
        ("group_norm", {"projection": sc.coherence.Projection(dim=64, seed=0)}),
        ("mlp", {"metric": sc.coherence.GaussNewton(solver="subspace")}),
    ],
    ids=["layers", "vmap", "loop", "projected", "subspace"],
)
def test_the_gradient_passes_give_the_definition_of_E_on_every_path(name, options, monkeypatch):
    # E comes with the influence at no extra forward pass: the losses the gradients are taken of
    def no_forward_passes(*args, **kwargs):
        raise AssertionError("measure ran the forward passes of equivariance_error")

    monkeypatch.setattr(sc.coherence.measurement, "equivariance_error", no_forward_passes)
    model = make(name)
    x, y = data()
    elements = ["r", "e", "sr2"]
    influence = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=elements, **options)
    expected = loop_errors(model, x, y, D4, PSEUDO, elements)
    torch.testing.assert_close(influence.equivariance, expected, **TOL["fp64"])
    spec = sc.coherence.MeasurementSpec(group=D4, field_type=PSEUDO, elements=elements, **options)
    measured = sc.coherence.measure(model, sc.smse, x, y, spec)
    expected = loop_errors(model, x, y, D4, PSEUDO, measured.influence.elements)
    torch.testing.assert_close(measured.equivariance, expected, **TOL["fp64"])
