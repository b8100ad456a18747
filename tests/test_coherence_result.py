"""OrbitInfluence: normalizations, summaries (logged key names), rebuilding, breakdown, bad input."""

import math

import pytest
import torch
from helpers.zoo import PSEUDO, SCALAR, data, make  # noqa: F401

import symcoherence as sc
from symcoherence.coherence import OrbitInfluence
from symcoherence.testing import TOLERANCES as TOL
from symcoherence.testing import reference_grads

D4 = sc.groups.D4()


def hand_built(normalization="none"):
    """K = 4 elements, N = 3 probes; diagonal medians 2 (e), 1, 3, 0.5; off-diagonals 0.2."""
    diagonals = torch.tensor([[2.0, 2.0, 2.0], [0.0, 1.0, 5.0], [3.0, 3.0, 3.0], [0.5, 0.4, 0.6]])
    matrix = torch.full((4, 3, 3), 0.2, dtype=torch.float64)
    matrix.diagonal(dim1=-2, dim2=-1).copy_(diagonals)
    return OrbitInfluence(
        matrix, torch.ones(4, 3), torch.ones(3), ("e", "a", "b", "c"), "G", normalization
    )


def test_summary_has_exactly_the_logged_keys_and_known_values():
    summary = hand_built().summary(prefix="val/")
    # N = 3 probes: medians, quartiles, ratios and baselines exist; the specific coupling needs a
    # spread of two off-diagonal values, which the constant off-diagonals here do not have, and
    # the transfer needs bra norms, which a hand-built result does not record.
    # no bra norms: the transfer, hence basin compatibility (min τ), is undefined and left out
    stats = ("median", "q1", "q3")
    expected_keys = {f"val/influence/G/{g}/{s}" for g in "eabc" for s in stats}
    expected_keys |= {f"val/coherence/G/ratio{b}/{g}" for g in "eabc" for b in ("", "_lo", "_hi")}
    expected_keys |= {f"val/coherence/G/ratio_baseline/{g}" for g in "eabc"}
    expected_keys |= {
        "val/coherence/G/orbit",
        "val/basin/G/suppressed",
        "val/coherence/G/ratio_baseline",
        "val/measurement/G/degenerate_rows",
        "val/measurement/G/zero_gradients",
    }
    assert set(summary) == expected_keys
    assert summary["val/influence/G/a/median"] == 1.0
    assert summary["val/influence/G/a/q1"] == 0.5  # linear interpolation between 0 and 1
    assert summary["val/influence/G/a/q3"] == 3.0
    assert summary["val/coherence/G/ratio/e"] == 1.0
    assert summary["val/coherence/G/ratio/a"] == 0.5
    assert summary["val/coherence/G/ratio/b"] == 1.5
    assert summary["val/coherence/G/ratio/c"] == 0.25
    assert summary["val/coherence/G/orbit"] == pytest.approx((0.5 + 1.5 + 0.25) / 3)
    assert summary["val/basin/G/suppressed"] == 0.0
    assert summary["val/coherence/G/ratio_baseline"] == pytest.approx(0.2 / 2.0)
    assert summary["val/coherence/G/ratio_baseline/a"] == pytest.approx(0.2 / 2.0)
    assert summary["val/coherence/G/ratio_lo/e"] == summary["val/coherence/G/ratio_hi/e"] == 1.0
    assert summary["val/measurement/G/degenerate_rows"] == 0.0
    assert all(isinstance(v, float) for v in summary.values())


def test_equivariance_keys_and_rank_correlation():
    errors = torch.tensor([[1.0, 1.0, 1.0], [4.0, 5.0, 6.0], [1.0, 0.9, 1.1], [9.0, 8.0, 10.0]])
    summary = hand_built().summary(equivariance=errors)
    assert summary["equivariance/G/a/median"] == 5.0
    assert summary["equivariance/G/a/q3"] == 5.5
    # ρ = (0.5, 1.5, 0.25) and |log E| at q3 = (log 5.5, log 1.05, log 9.5) over g ≠ e: exactly
    # reversed ranks; 2 of the 3! = 6 orderings reach |r| = 1, so the permutation p-value is 1/3
    assert summary["equivariance/G/influence_error_rank_corr"] == pytest.approx(-1.0)
    assert summary["equivariance/G/influence_error_rank_corr_pvalue"] == pytest.approx(1 / 3)
    tied = hand_built().summary(equivariance=torch.ones(4, 3))
    assert (
        "equivariance/G/influence_error_rank_corr" not in tied
    )  # constant errors: undefined, omitted
    round_off = torch.ones(4, 3) + torch.tensor([0.0, 3e-12, -2e-12, 1e-12])[:, None]
    noisy = hand_built().summary(equivariance=round_off)
    assert "equivariance/G/influence_error_rank_corr" not in noisy  # round-off differences are ties
    two = hand_built().reorder(["e", "a", "b"]).summary(equivariance=errors[:3])
    assert "equivariance/G/influence_error_rank_corr" not in two  # fewer than 3 elements g ≠ e
    assert "equivariance/G/b/median" in two
    with pytest.raises(ValueError, match="same elements"):
        hand_built().summary(equivariance=errors[:2])


def test_standard_normalization_divides_rows_by_their_std_and_degenerate_rows_are_nan():
    matrix = torch.tensor(
        [[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]], dtype=torch.float64
    )
    result = OrbitInfluence(matrix, torch.ones(1, 3), torch.ones(3), ("e",), "G", "standard")
    normalized = result.normalized
    torch.testing.assert_close(
        normalized[0, 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    )  # std 1
    assert normalized[0, 1:].isnan().all()  # no spread: no normalized value, never a silent 0
    assert result.degenerate_rows == 2
    assert result.summary()["measurement/G/degenerate_rows"] == 2.0
    assert result.summary()["influence/G/e/median"] == 1.0  # only probe 0 counts: Ĥ[0, 0] = 1


def test_cosine_normalization_and_its_vanishing_gradient_convention():
    matrix = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    result = OrbitInfluence(
        matrix, torch.tensor([[4.0, 0.0]]), torch.tensor([1.0, 0.0]), ("e",), "G", "cosine"
    )
    nan = float("nan")
    torch.testing.assert_close(
        result.normalized,
        torch.tensor([[[1.0, nan], [nan, nan]]], dtype=torch.float64),
        equal_nan=True,
    )


def test_a_fitted_probe_is_a_counted_degenerate_row_with_a_warning():
    model = make("circular_conv")
    x, y = data(n=5)
    with torch.no_grad():
        y[2] = model(x[2:3])[
            0
        ]  # exact fit: a_2 = 0, and b_2^g = 0 (the model is shift-equivariant)
    shifts = sc.groups.Shifts(shifts=[(1, 0), (2, 3)])
    for normalization in ("standard", "cosine"):
        with pytest.warns(RuntimeWarning, match="3 of 15 influence rows are degenerate"):
            result = sc.orbit_influence(
                model, sc.smse, x, y, shifts, SCALAR, normalization=normalization
            )
        assert result.matrix[:, 2].abs().max() == 0 and result.matrix[:, :, 2].abs().max() == 0
        assert result.zero_gradients == 3 and result.degenerate_rows == 3  # probe 2, each element
        assert result.influence[:, 2].isnan().all()
        assert torch.isfinite(result.influence[:, [0, 1, 3, 4]]).all()
        summary = result.summary()
        assert math.isfinite(summary["coherence/Shifts/orbit"])
        assert summary["measurement/Shifts/zero_gradients"] == 3.0


def test_all_zero_gradients_are_refused_not_logged_as_zeros():
    model = make("circular_conv")
    x, _ = data(n=4)
    with torch.no_grad():
        y = model(x)  # every probe fitted exactly
    with pytest.raises(ValueError, match="every per-sample loss gradient .* is exactly zero"):
        sc.orbit_influence(model, sc.smse, x, y, D4, SCALAR)


def test_concatenating_element_subsets_rebuilds_the_whole():
    model = make("group_norm")
    x, y = data()
    # a budget in bytes: a fraction of the free memory would move with the machine between calls
    options = {"breakdown": True, "max_memory": 2**30}
    whole = sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, **options)
    parts = [
        sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO, elements=chunk, **options)
        for chunk in (["sr3", "r"], ["r3", "e", "s"], ["r2", "sr", "sr2"])
    ]
    rebuilt = OrbitInfluence.concatenate(parts, elements=D4.elements)
    assert rebuilt.elements == D4.elements
    torch.testing.assert_close(rebuilt.matrix, whole.matrix, **TOL["fp64"])
    torch.testing.assert_close(rebuilt.bra_self, whole.bra_self, **TOL["fp64"])
    for module in whole.by_module:
        torch.testing.assert_close(
            rebuilt.by_module[module], whole.by_module[module], **TOL["fp64"]
        )
    assert rebuilt.summary() == pytest.approx(whole.summary())
    with pytest.raises(ValueError, match="identity element 'e'"):
        parts[0].summary()
    with pytest.raises(ValueError, match="disjoint"):
        OrbitInfluence.concatenate([parts[0], parts[0]])
    with pytest.raises(ValueError, match="differ"):
        OrbitInfluence.concatenate([parts[0], parts[1].with_normalization("cosine")])


def test_concatenate_keeps_the_worst_solver_diagnostics():
    first, second = hand_built().reorder(["e", "a"]), hand_built().reorder(["b"])
    first.info, second.info = (
        {"cg_iterations": 3, "cg_relative_residual": 1e-6},
        {"cg_iterations": 7, "cg_relative_residual": 1e-8},
    )
    merged = OrbitInfluence.concatenate([first, second]).info
    assert merged == {"cg_iterations": 7, "cg_relative_residual": 1e-6}


@pytest.mark.parametrize("metric", ["identity", "adam"])
def test_per_module_breakdown_adds_up_to_the_whole(metric):
    model = make("group_norm")
    x, y = data()
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.zero_grad()
    torch.func.vmap(sc.smse)(model(x), y).mean().backward()
    optimizer.step()
    result = sc.orbit_influence(
        model, sc.smse, x, y, D4, PSEUDO, metric=metric, optimizer=optimizer, breakdown=True
    )
    assert list(result.by_module) == ["0", "1", "3"]  # conv, group norm, conv
    total = sum(result.by_module.values())
    torch.testing.assert_close(total, result.matrix, **TOL["fp64"])
    only_first = sc.orbit_influence(
        model,
        sc.smse,
        x,
        y,
        D4,
        PSEUDO,
        metric=metric,
        optimizer=optimizer,
        parameter_filter=lambda name, p: name.startswith("0."),
    )
    torch.testing.assert_close(result.by_module["0"], only_first.matrix, **TOL["fp64"])


def _sgd_stepped(model, x):
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    sgd.step()
    return sgd


BAD_CALLS = [
    ({"targets": lambda x, y, m: y[:3]}, "same number of samples"),
    ({"field_type": lambda x, y, m: sc.FieldType(["vector"])}, "has 2 channels but inputs has 1"),
    ({"target_field_type": lambda x, y, m: sc.FieldType(["vector"])}, "but targets has 1"),
    ({"inputs": lambda x, y, m: x[0]}, r"must be a batch of fields \(N, C, H, W\)"),
    ({"metric": "fisher"}, "unknown metric 'fisher'"),
    ({"normalization": "zscore"}, "unknown normalization 'zscore'"),
    ({"elements": []}, "element list is empty"),
    ({"elements": ["e", "q"]}, "unknown element 'q'"),
    ({"elements": ["e", "e"]}, "distinct"),
    ({"inputs": lambda x, y, m: x[:1], "targets": lambda x, y, m: y[:1]}, "needs N >= 2"),
    ({"metric": "gauss_newton", "breakdown": True}, "diagonal metrics"),
    ({"metric": "adam"}, "pass optimizer"),
    (
        {"metric": "adam", "optimizer": lambda x, y, m: torch.optim.Adam(m.parameters())},
        "call optimizer.step",
    ),
    ({"metric": "adam", "optimizer": lambda x, y, m: _sgd_stepped(m, x)}, "not Adam-like"),
    ({"parameter_filter": lambda x, y, m: lambda n, p: False}, "no parameter selected"),
    ({"parameter_filter": ["0.weight", "nope"]}, "unknown parameter name"),
    ({"chunk_size": 0}, "chunk_size must be a positive int"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CALLS)
def test_bad_input_gives_clear_errors(change, message):
    x, y = data()
    model = make("circular_conv")
    call = dict(model=model, loss_fn=sc.smse, inputs=x, targets=y, group=D4, field_type=PSEUDO)
    for name, value in change.items():
        call[name] = value(x, y, model) if callable(value) else value
    with pytest.raises(ValueError, match=message):
        sc.orbit_influence(**call)


def test_batch_norm_in_training_mode_is_refused_and_eval_mode_leaves_statistics_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.Conv2d(2, 1, 1)
    ).double()
    x, y = data()
    with pytest.raises(ValueError, match=r"training mode.*model.eval\(\)"):
        sc.per_sample_grads(model, sc.smse, x, y)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sc.orbit_influence(model, sc.smse, x, y, D4, PSEUDO)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_dropout_in_training_mode_needs_explicit_randomness():
    model = make("dropout_eval").train()
    x, y = data()
    with pytest.raises(ValueError, match="randomness='different'"):
        sc.per_sample_grads(model, sc.smse, x, y)
    grads = sc.per_sample_grads(model, sc.smse, x, y, flatten=True, randomness="different")
    assert torch.isfinite(grads).all()
    model.eval()
    deterministic = sc.per_sample_grads(model, sc.smse, x, y, flatten=True)
    assert grads.shape == deterministic.shape
    assert not torch.allclose(grads, deterministic)  # the masks were drawn and applied
    expected = reference_grads(model, sc.smse, x, y, list(model.parameters()))
    torch.testing.assert_close(deterministic, expected, **TOL["fp64"])
    torch.testing.assert_close(
        sc.per_sample_grads(model, sc.smse, x, y, flatten=True, chunk_size=1),
        expected,
        **TOL["fp64"],
    )


def test_result_constructor_validates_shapes():
    with pytest.raises(ValueError, match=r"\(K, N, N\)"):
        OrbitInfluence(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), ("e", "r"), "G")
    with pytest.raises(ValueError, match="distinct element names"):
        OrbitInfluence(torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.zeros(3), ("e",), "G")
    with pytest.raises(ValueError, match="bra_self"):
        OrbitInfluence(torch.zeros(1, 3, 3), torch.zeros(2, 3), torch.zeros(3), ("e",), "G")
    with pytest.raises(ValueError, match="unknown normalization"):
        OrbitInfluence(torch.zeros(1, 3, 3), torch.zeros(1, 3), torch.zeros(3), ("e",), "G", "l2")
