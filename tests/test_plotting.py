"""Figures: labelled axes, intervals, legible heatmaps and an error panel with its own scale."""

import math

import torch

from symcoherence.coherence import OrbitInfluence
from symcoherence.models.panel import render_panel
from symcoherence.plotting import heatmap_figure, statistic_figure, summary_figure


def _result():
    generator = torch.Generator().manual_seed(0)
    h = torch.eye(6).repeat(3, 1, 1) + 0.3 * torch.randn(3, 6, 6, generator=generator)
    return OrbitInfluence(h, torch.ones(3, 6), torch.ones(6), ("e", "r", "s"), "G")


def test_summary_figure_labels_every_panel_and_draws_the_intervals():
    errors = torch.tensor([[1.0] * 6, [2.0, 3.0, 2.5, 4.0, 2.0, 3.0], [1.1] * 6])
    figure = summary_figure(_result().summarize(errors), "G, identity metric, N = 6")
    axes = figure.axes
    assert [ax.get_ylabel() for ax in axes] == [  # the paper's ρ first, as on the plain figure
        "coherence ratio ρ(g)",
        "specific coupling z(g)",
        "distribution transfer τ(g)",
        "equivariance error E(g)",
    ]
    title = figure._suptitle.get_text().splitlines()
    assert title[0] == "G, identity metric, N = 6"
    assert title[1].startswith("G: no element suppressed")  # the verdict
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["e", "r", "s"]
    bars = [c for c in axes[0].containers if type(c).__name__ == "ErrorbarContainer"]
    assert bars and bars[0].has_yerr


def test_one_statistic_per_figure_titled_with_settings_and_verdict_in_large_type():
    errors = torch.tensor([[1.0] * 6, [2.0, 3.0, 2.5, 4.0, 2.0, 3.0], [1.1] * 6])
    summary = _result().summarize(errors)
    figure = statistic_figure(summary, "ratio", "G, identity metric, N = 6, step 4", "no flag")
    (ax,) = figure.axes
    assert ax.get_ylabel() == "ρ(g)"  # the symbol; the title names the statistic
    title = ax.get_title(loc="left").splitlines()
    assert title == ["the paper's coherence ratio ρ(g), 90 % interval",
                     "G, identity metric, N = 6, step 4", "no flag"]  # fmt: skip
    assert ax.yaxis.label.get_size() >= 12 and ax.get_xticklabels()[0].get_size() >= 12
    width, height = figure.get_size_inches() * figure.dpi
    # a TensorBoard card shows about 300 px: drawn near that size, its 12-pt type stays legible
    assert width <= 560 and height <= 400
    flags = statistic_figure(summary, "ratio", "t").axes[0].get_title(loc="left")
    flagged = sorted(name for name, value in summary.suppressed.items() if value)
    assert flags.splitlines()[-1] == (
        f"flagged: {', '.join(flagged)}" if flagged else "no element flagged"
    )
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert bars and bars[0].has_yerr
    error = statistic_figure(summary, "equivariance", "t")
    assert error.axes[0].get_yscale() == "log"
    assert statistic_figure(_result().summarize(), "equivariance", "t") is None  # not measured


def test_heatmap_has_element_rows_probe_columns_and_a_centred_colour_bar():
    influence = _result().influence.clone()
    influence[1, 2] = float("nan")  # a degenerate probe is drawn, not dropped
    figure = heatmap_figure(influence, ("e", "r", "s"), "I_n(g)")
    main, bar = figure.axes
    assert [t.get_text() for t in main.get_yticklabels()] == ["e", "r", "s"]
    assert main.get_xlabel() == "probe n" and bar.get_ylabel() == "influence $I_n(g)$"
    low, high = main.images[0].get_clim()
    assert math.isclose(low, -high)


def test_a_small_prediction_error_is_visible_on_its_own_colour_scale():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(1, 16, 16, generator=generator)
    small = truth + 1e-3 * torch.randn(1, 16, 16, generator=generator)
    image = torch.from_numpy(render_panel(truth, truth, small)).double()
    exact = torch.from_numpy(render_panel(truth, truth, truth)).double()
    error_quarter = slice(3 * image.shape[1] // 4, image.shape[1])
    # with the truth's ±max scale a 1e-3 error would be one flat colour
    assert image[:, error_quarter].std() > 20
    assert (image[:, error_quarter] - exact[:, error_quarter]).abs().mean() > 10
