"""Known answers: exact equivariance gives ρ = 1 for every metric; the trivial group gives 1;
negative controls give ρ < 1; invariances of the normalized outputs."""

import pytest
import torch
from helpers.zoo import PSEUDO, SCALAR, GroupAveraged, data, make, stepped_adam  # noqa: F401

import symcoherence as sc
from symcoherence.coherence import Adam, GaussNewton, Identity
from symcoherence.testing import TOLERANCES as TOL

D4 = sc.groups.D4()
SHIFTS = sc.groups.Shifts(shifts=[(1, 0), (0, 2), (3, 5)])


def metric_named(name, model=None, x=None, y=None):
    """The metric under test; ``adam`` first trains ``model`` for two steps to fill its state."""
    if name == "adam":
        return Adam(stepped_adam(model, x, y))
    return {
        "identity": Identity(),
        "gn_cg": GaussNewton(tol=1e-11, max_iter=3000),
        "gn_subspace": GaussNewton(solver="subspace"),
    }[name]


@pytest.mark.parametrize(
    ("metric", "normalization"),
    [
        *[(m, "standard") for m in ("identity", "adam", "gn_cg", "gn_subspace")],
        *[(m, n) for m in ("identity", "gn_subspace") for n in ("cosine", "none")],
    ],
)
def test_group_averaged_model_has_ratio_one_everywhere(metric, normalization):
    model = GroupAveraged(make("mlp"), D4, PSEUDO)
    x, y = data(n=5)
    chosen = metric_named(metric, model, x, y)
    result = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=chosen, normalization=normalization
    )
    torch.testing.assert_close(result.ratio, torch.ones(8, dtype=torch.float64), **TOL["fp64"])
    assert result.matrix.abs().max() > 0


@pytest.mark.parametrize("metric", ["identity", "adam", "gn_cg", "gn_subspace"])
def test_circular_convolution_under_integer_shifts_has_ratio_one(metric):
    model = make("circular_conv")
    x, y = data(n=5)
    chosen = metric_named(metric, model, x, y)
    result = sc.orbit_influence(model, sc.smse, x, y, SHIFTS, SCALAR, metric=chosen)
    summary = result.summary()
    for element in SHIFTS.elements:
        assert summary[f"coherence/Shifts/ratio/{element}"] == pytest.approx(1.0, rel=1e-10)
    assert summary["coherence/Shifts/orbit"] == pytest.approx(1.0, rel=1e-10)
    assert summary["basin/Shifts/compatibility"] == pytest.approx(1.0, rel=1e-10)


def test_a_group_acting_trivially_gives_ratio_one_for_any_model():
    model = make("mlp")  # no symmetry at all
    x, y = data(n=5)
    full_turns = sc.groups.Shifts(shifts=[(6, 0), (0, 6)])  # rolls by the grid size: identity maps
    result = sc.orbit_influence(model, sc.smse, x, y, full_turns, SCALAR)
    torch.testing.assert_close(result.ratio, torch.ones(3, dtype=torch.float64), **TOL["fp64"])


def test_the_trivial_group_reports_one():
    model = make("mlp")
    x, y = data(n=5)
    trivial = D4.subgroup(["e"], name="trivial")
    summary = sc.orbit_influence(model, sc.smse, x, y, trivial, SCALAR).summary()
    assert summary["coherence/trivial/ratio/e"] == 1.0
    assert summary["coherence/trivial/orbit"] == 1.0
    assert summary["basin/trivial/compatibility"] == 1.0


@pytest.mark.parametrize("metric", ["identity", "gn_subspace"])
def test_zero_padded_convolution_under_shifts_is_below_one(metric):
    model = make("circular_conv")
    x, y = data(n=8)
    chosen = metric_named(metric, model, x, y)
    ratios = {}
    for padding in ("circular", "zeros"):
        for conv in (model[0], model[2]):
            conv.padding_mode = padding
        ratios[padding] = sc.orbit_influence(
            model, sc.smse, x, y, SHIFTS, SCALAR, metric=chosen
        ).ratio
    torch.testing.assert_close(
        ratios["circular"], torch.ones(4, dtype=torch.float64), **TOL["fp64"]
    )
    assert ratios["zeros"][1:].min() < 0.95, ratios["zeros"]


def test_channel_mixing_that_ignores_the_pseudoscalar_sign_fails_only_under_reflections():
    # A pointwise layer commutes with every grid permutation, but mixing a pseudoscalar with a
    # scalar is wrong under reflections, where only the pseudoscalar changes sign.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1)
    ).double()
    kind = sc.FieldType(["pseudoscalar", "scalar"])
    x, y = data(n=8, channels=2)
    ratio = dict(
        zip(
            D4.elements,
            sc.orbit_influence(model, sc.smse, x, y, D4, kind).ratio.tolist(),
            strict=True,
        )
    )
    for rotation in ("e", "r", "r2", "r3"):
        assert ratio[rotation] == pytest.approx(1.0, rel=1e-10)
    for reflection in ("s", "sr", "sr2", "sr3"):
        assert ratio[reflection] < 0.99


@pytest.mark.parametrize("normalization", ["standard", "cosine"])
@pytest.mark.parametrize("metric", ["identity", "gn_subspace"])
def test_normalized_outputs_are_unchanged_by_scaling_the_loss(normalization, metric):
    model = make("group_norm")
    x, y = data()
    chosen = metric_named(metric)

    def scaled(prediction, target):
        return 7.3 * sc.smse(prediction, target)

    base = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=chosen, normalization=normalization
    )
    other = sc.orbit_influence(
        model, scaled, x, y, D4, PSEUDO, metric=chosen, normalization=normalization
    )
    torch.testing.assert_close(other.matrix, 7.3**2 * base.matrix, **TOL["fp64"])
    torch.testing.assert_close(other.normalized, base.normalized, **TOL["fp64"])


def test_reordering_elements_reorders_results():
    model = make("spectral")
    x, y = data()
    order = ["sr2", "e", "r3", "s"]
    budget = {"max_memory": 2**30}  # in bytes: a fraction of the free memory moves between calls
    forward = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=order, **budget)
    backward = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=order[::-1], **budget)
    assert backward.elements == tuple(order[::-1])
    torch.testing.assert_close(backward.matrix, forward.matrix.flip(0), **TOL["fp64"])
    torch.testing.assert_close(backward.ratio, forward.ratio.flip(0), **TOL["fp64"])
    assert forward.summary() == pytest.approx(backward.summary())


@pytest.mark.parametrize("name", ["circular_conv", "spectral"])
def test_float32_and_float64_agree(name):
    x, y = data()
    results = {
        dtype: sc.orbit_influence(make(name, dtype), sc.smse, x.to(dtype), y.to(dtype), D4, PSEUDO)
        for dtype in (torch.float32, torch.float64)
    }
    # fp32 accumulation over P parameters: normwise agreement at the fp32 tolerance scale
    low, high = results[torch.float32].normalized.double(), results[torch.float64].normalized
    assert float((low - high).abs().max() / high.abs().max()) <= 10 * TOL["fp32"]["rtol"]
