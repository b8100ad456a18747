"""The forward error E has no bias of its own: where E < 1 appears, it comes from the probe sample.

``E_n(g) = loss(f(g·x_n), g·y_n) / loss(f(x_n), y_n)``. On a probe set that is closed under the
group (it holds every ``h·x_n`` with its target ``h·y_n``), ``g`` only permutes the probes, so for
ANY model — equivariant or not, trained or not — ``Σ_z log E(z; g) = Σ_z log L(g·z) − Σ_z log L(z)
= 0``: the geometric mean of E is exactly 1, and for an involution the values pair up as ``E`` and
``1/E``, so the median is exactly 1. A systematic ``E < 1`` on held-out data therefore says that
the held-out sample is not (statistically) closed under the group as seen by the model: its
untransformed states are harder for the model than their images. In the quickstart that sample is
16 validation trajectories (240 correlated pairs), and experiments/equivariance_error_baseline.py
measures how wide the interval of the median E is once whole trajectories are resampled.
"""

import importlib.util
import sys
from pathlib import Path

import torch

import symcoherence as sc
from symcoherence.models import UNet2d
from symcoherence.testing import TOLERANCES

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "equivariance_error_baseline.py"
FIELD = sc.FieldType(["pseudoscalar"])


def _orbit_closed(x: torch.Tensor, y: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(h·x_n, h·y_n)``: a probe set that every element of ``group`` only permutes."""
    pairs = [group.act_pair(h, x, y, FIELD, FIELD) for h in group.elements]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet2d(1, 1, width=4, depth=1).double().eval()  # not equivariant (stride 2, kernels)


def test_error_of_any_model_has_geometric_mean_one_on_an_orbit_closed_probe_set():
    group = sc.groups.D4()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    y = x + 0.3 * torch.randn_like(x)
    inputs, targets = _orbit_closed(x, y, group)
    errors = sc.equivariance_error(_model(), sc.smse, inputs, targets, group, FIELD)  # (8, 40)
    log_mean = errors.log().mean(dim=1)
    torch.testing.assert_close(log_mean, torch.zeros_like(log_mean), **TOLERANCES["fp64"])
    for k, element in enumerate(group.elements):
        if group.compose(element, element) == group.identity:  # involution: E and 1/E pair up
            torch.testing.assert_close(
                errors[k].log().quantile(0.5).abs(),  # (the middle two of 40 are ±a)
                torch.tensor(0.0, dtype=torch.float64),
                **TOLERANCES["fp64"],
            )
    # the same model on the un-closed sample: E is not 1 (the bias lives in the sample)
    raw = sc.equivariance_error(_model(), sc.smse, x, y, group, FIELD)
    assert float(raw[1:].log().mean(dim=1).abs().max()) > 1e-3


def test_trajectory_bootstrap_is_wider_than_probe_bootstrap_for_correlated_samples():
    spec = importlib.util.spec_from_file_location("equivariance_error_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    generator = torch.Generator().manual_seed(0)
    # 16 "trajectories" of 15 samples sharing a per-trajectory level: the quickstart's layout
    level = (0.3 * torch.randn(16, 1, generator=generator)).exp()
    values = (level * (0.1 * torch.randn(16, 15, generator=generator)).exp()).flatten()
    clusters = torch.arange(16).repeat_interleave(15)
    low, high = module.cluster_interval(values, clusters, resamples=400)
    independent = module.cluster_interval(values, torch.arange(values.numel()), resamples=400)
    assert high - low > 1.5 * (independent[1] - independent[0])
