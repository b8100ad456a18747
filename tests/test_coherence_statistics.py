"""Statistics of the influence matrices: known structure, invariances, intervals, p-values."""

import copy
import itertools

import pytest
import torch
from helpers.zoo import PSEUDO, GroupAveraged, data, make

import symcoherence as sc
from symcoherence.coherence import MeasurementSpec, OrbitInfluence, measure
from symcoherence.coherence.statistics import (
    bootstrap_interval,
    resampled_medians,
    spearman,
    specific_coupling,
    unit_transfer,
)
from symcoherence.testing import TOLERANCES as TOL

D4 = sc.groups.D4()


def synthetic(n, coupling, offset, noise=1.0, seed=0):
    """H^g[n, m] = offset + coupling_g δ_nm + noise ε: a common mode, a pair-specific coupling
    and unrelated-pair noise of known sizes (K = len(coupling))."""
    generator = torch.Generator().manual_seed(seed)
    k = len(coupling)
    h = offset + noise * torch.randn(k, n, n, generator=generator, dtype=torch.float64)
    h += torch.tensor(coupling, dtype=torch.float64)[:, None, None] * torch.eye(n)
    return h


def test_specific_coupling_recovers_the_known_coupling_whatever_n_and_the_common_offset():
    coupling = [6.0, 3.0, 0.0]  # e, a pair-coupled element, an uncoupled element
    for n in (16, 64):
        for offset in (0.0, 25.0):
            z = specific_coupling(synthetic(n, coupling, offset, seed=n)).median(-1).values
            # z_n = coupling / noise up to sampling error of order 1/sqrt(n)
            torch.testing.assert_close(
                z, torch.tensor(coupling, dtype=torch.float64), atol=0.6, rtol=0
            )


def test_the_standard_ratio_moves_with_the_common_offset_and_with_n_the_coupling_does_not():
    def standard_ratio(h):
        result = OrbitInfluence(
            h, torch.ones(h.shape[:2]), torch.ones(h.shape[1]), ("e", "a", "b"), "G"
        )
        return result.ratio

    small, shifted = synthetic(16, [6.0, 3.0, 0.0], 0.0), synthetic(16, [6.0, 3.0, 0.0], 25.0)
    # a pure common mode drags the uncoupled element's ρ towards 1 ...
    assert standard_ratio(small)[2] < 0.2 and standard_ratio(shifted)[2] > 0.8
    # ... while its specific coupling stays ≈ 0
    for h in (small, shifted):
        assert abs(float(specific_coupling(h)[2].median())) < 0.6
    # and the standard normalization saturates with N (its diagonal grows like sqrt(N))
    big = synthetic(64, [60.0, 3.0, 0.0], 0.0)
    few = synthetic(8, [60.0, 3.0, 0.0], 0.0)
    assert standard_ratio(big)[1] < 0.6 * standard_ratio(few)[1]


def test_coupling_and_transfer_are_invariant_to_row_scale_and_offset_exactly_where_claimed():
    h = synthetic(12, [4.0, 1.0], 2.0)
    norms = torch.rand(2, 12, dtype=torch.float64) + 0.5
    scale = torch.rand(2, 12, 1, dtype=torch.float64) + 0.1
    torch.testing.assert_close(
        specific_coupling(scale * h + 7.0), specific_coupling(h), **TOL["fp64"]
    )
    # outputs and targets × c: every gradient × c, so H × c² and ‖b‖ × c; τ is a ratio to e
    c = 3.7
    t, t_scaled = unit_transfer(h, norms), unit_transfer(c**2 * h, c * norms)
    torch.testing.assert_close(t_scaled, c * t, **TOL["fp64"])


def test_an_exactly_equivariant_model_has_coupling_equal_to_the_identity_and_transfer_one():
    model = GroupAveraged(make("group_norm"), D4, PSEUDO)
    x, y = data(n=6)
    result = measure(model, sc.smse, x, y, MeasurementSpec(group=D4, field_type=PSEUDO))
    summary = result.summary()
    e = summary.element("e")
    for row in summary:
        # b_n^g = a_n up to the round-off of a group average summed in another order
        for value, expected in (
            (row.ratio, 1.0),
            (row.coupling, e.coupling),
            (row.transfer, 1.0),
            (row.equivariance_median, 1.0),
        ):
            assert value == pytest.approx(
                expected, rel=TOL["fp64"]["rtol"], abs=TOL["fp64"]["atol"]
            )


def test_every_reported_number_is_invariant_to_rescaling_outputs_and_targets():
    model = make("group_norm")
    x, y = data()

    class Scaled(torch.nn.Module):
        def __init__(self, inner, factor):
            super().__init__()
            self.inner, self.factor = inner, factor

        def forward(self, inputs):
            return self.factor * self.inner(inputs)

    # a budget in bytes: a fraction of the free memory would move with the machine between calls
    spec = MeasurementSpec(group=D4, field_type=PSEUDO, resamples=200, max_memory=2**30)
    base = measure(model, sc.smse, x, y, spec).scalars()
    scaled = measure(Scaled(model, 40.0), sc.smse, x, 40.0 * y, spec).scalars()
    timing = {key for key in base if key.endswith("/seconds")}
    assert set(base) == set(scaled)
    for key in set(base) - timing:
        # smse divides by RMS(y) + 1e-6, so scaling y moves that ε relative to the RMS: invariance
        # holds to about 1e-6 relative, not to float64 round-off
        assert scaled[key] == pytest.approx(base[key], rel=1e-5, abs=1e-8), key


def test_bootstrap_interval_of_a_median_covers_the_true_median_at_about_the_nominal_rate():
    true_median = torch.log(torch.tensor(2.0)).item()  # of the unit exponential distribution
    generator = torch.Generator().manual_seed(1)
    covered, repeats = 0, 300
    for repeat in range(repeats):
        values = -torch.log(torch.rand(1, 41, generator=generator, dtype=torch.float64))
        low, high = bootstrap_interval(
            lambda idx, v=values: resampled_medians(v, idx),
            41,
            confidence=0.9,
            resamples=400,
            seed=repeat,
        )
        covered += int(low[0] <= true_median <= high[0])
    assert 0.82 <= covered / repeats <= 0.97  # nominal 0.90; percentile intervals run a bit short


def test_spearman_permutation_p_value_equals_a_brute_force_count():
    x = torch.tensor([0.3, 0.1, 0.7, 0.5, 0.9])
    y = torch.tensor([1.0, 2.0, 5.0, 3.0, 4.0])
    r, p = spearman(x, y)

    def rho(a, b):
        ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
        ra, rb = ra - ra.mean(), rb - rb.mean()
        return float((ra * rb).sum() / (ra.pow(2).sum() * rb.pow(2).sum()).sqrt())

    assert r == pytest.approx(rho(x, y))
    count = sum(
        abs(rho(x, y[list(order)])) >= abs(r) - 1e-12 for order in itertools.permutations(range(5))
    )
    assert p == pytest.approx(count / 120)
    assert spearman(x[:2], y[:2]) is None


def test_adam_metric_is_the_geometry_of_an_actual_adam_step():
    """With β1 = 0 an Adam step on x_m moves θ by −lr · a_m / (sqrt(v̂) + eps), v̂ read after the
    step; the loss change at g·x_n is then −lr · H_adam^g[n, m] to first order, exactly linear in
    the step, so −b_nᵀ δθ / lr must equal the metric computed from the same optimizer state."""
    model = make("group_norm")
    x, y = data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.9))
    for _ in range(3):
        optimizer.zero_grad()
        torch.func.vmap(sc.smse)(model(x), y).mean().backward()
        optimizer.step()
    kets = sc.per_sample_grads(model, sc.smse, x, y, flatten=True)
    bras = sc.per_sample_grads(model, sc.smse, *D4.act_pair("r", x, y, PSEUDO), flatten=True)
    for m in (0, 3):
        stepped, stepped_optimizer = copy.deepcopy((model, optimizer))
        params = list(stepped.parameters())
        before = torch.cat([p.detach().reshape(-1).clone() for p in params])
        offsets = torch.tensor([0] + [p.numel() for p in params]).cumsum(0)
        for p, start, stop in zip(params, offsets[:-1], offsets[1:], strict=True):
            p.grad = kets[m, start:stop].reshape(p.shape).clone()
        stepped_optimizer.step()
        delta = torch.cat([p.detach().reshape(-1) for p in params]) - before
        # the metric read from the state the step used, at the gradients the step started from
        restored = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.9))
        restored.load_state_dict(stepped_optimizer.state_dict())
        result = sc.orbit_influence(
            model, sc.smse, x, y, D4, PSEUDO, elements=["e", "r"], metric="adam", optimizer=restored
        )
        torch.testing.assert_close(result.matrix[1, :, m], -(bras @ delta) / 1e-3, **TOL["fp64"])
        torch.testing.assert_close(result.matrix[0, :, m], -(kets @ delta) / 1e-3, **TOL["fp64"])


def test_the_decision_rule_flags_an_element_whose_whole_interval_is_below_the_threshold():
    from symcoherence.coherence import DecisionRule

    n = 12
    h = synthetic(n, [5.0, 5.0, 5.0], 2.0, noise=0.3)  # a common mode: t_n(e) ≈ 2
    h[1] -= 3.0  # "r": a step on the data raises the loss at r·x (negative off-diagonal mean)
    h[2] += 3.0  # "s": positive transfer
    result = OrbitInfluence(
        h, torch.ones(3, n), torch.ones(n), ("e", "r", "s"), "G", bra_norm=torch.ones(3, n)
    )
    summary = result.summarize()
    assert summary.suppressed == {"r": True, "s": False}
    scalars = summary.scalars()
    assert scalars["coherence/G/suppressed/r"] == 1.0 and scalars["coherence/G/suppressed/s"] == 0.0
    assert "coherence/G/suppressed/e" not in scalars
    assert "suppressed: r" in summary.verdict()
    by_ratio = result.summarize(rule=DecisionRule("ratio", "baseline")).suppressed
    assert set(by_ratio) == {"r", "s"}
    # basin compatibility is the minimum of the rule's statistic over g ≠ e, with its interval
    assert summary.compatibility == summary.element("r").transfer
    assert summary.compatibility_lo <= summary.compatibility <= summary.compatibility_hi
    assert summary.compatibility_hi < 0.5  # the flagged element's whole interval is below 0.5
    assert scalars["basin/G/compatibility"] == summary.compatibility
    assert scalars["coherence/G/compatibility_hi"] == summary.compatibility_hi
    assert scalars["basin/G/suppressed"] == 1.0  # one flagged element
    assert summary.orbit == pytest.approx(
        (summary.element("r").ratio + summary.element("s").ratio) / 2
    )
    by_coupling = result.summarize(rule=DecisionRule("coupling", 0.0))
    couplings = [by_coupling.element(g).coupling for g in ("r", "s")]
    assert by_coupling.compatibility == min(couplings)
    assert by_coupling.compatibility != summary.compatibility
    with pytest.raises(ValueError, match="statistic='ratio'"):
        DecisionRule("coupling", "baseline")
    with pytest.raises(ValueError, match="unknown statistic"):
        DecisionRule("median")
