"""The sharded source: projected per-sample gradients from the layer hooks of the model as it is.

It serves FSDP2 models (``tests/test_fsdp_callback.py`` runs it on one, 2 processes on gloo), but
needs no sharding: on a plain model, in one process, its rows must equal those of the projection
through the reparametrized model (fp64), a layer called twice must add up its calls, bfloat16
activations must be upcast, and what it cannot measure must be refused with the way out.
"""

import pytest
import torch
from helpers.zoo import data, group_norm_net, stepped_adam
from test_coherence_layer_hooks import Checkpointed
from test_coherence_projection import HOOKED, Mixer, mixer
from torch import nn

import symcoherence as sc
from symcoherence.coherence import Identity, Projection
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layer_hooks import register_rule
from symcoherence.coherence.gradients.projection import ProjectedGradients
from symcoherence.coherence.gradients.sharded import ShardedProjectedGradients
from symcoherence.coherence.metrics.diagonal import Adam, projection_scale
from symcoherence.testing import TOLERANCES

FP64 = TOLERANCES["fp64"]


def both(model, dim, metric=None):
    fmodel = FunctionalModel(model)
    scale = projection_scale(metric or Identity(), fmodel)
    projection = Projection(dim=dim)
    return (
        ShardedProjectedGradients(projection, model, fmodel, scale),
        ProjectedGradients(projection, model, fmodel, scale),
    )


@pytest.mark.parametrize("metric", ["identity", "adam"])
def test_the_rows_and_norms_equal_the_projection_through_the_reparametrized_model(metric):
    model = mixer()
    x, y = data(n=5, grid=8)
    optimizer = stepped_adam(model, x, y) if metric == "adam" else None
    sharded, reference = both(model, 200, Adam(optimizer) if optimizer else None)
    kronecker = [n for n, p in sharded.plans.items() if hasattr(p, "out_factor")]
    assert kronecker == HOOKED  # both kinds of block are exercised
    got = sharded.flat_grad_matrix(sc.smse, x, y, chunk_size=2)
    expected = reference.flat_grad_matrix(sc.smse, x, y, chunk_size=2)
    torch.testing.assert_close(got.rows, expected.rows, **FP64)
    torch.testing.assert_close(got.norms, expected.norms, **FP64)
    torch.testing.assert_close(got.losses, expected.losses, **FP64)
    assert sharded.largest_chunk == 2


def test_at_a_dimension_of_at_least_p_the_rows_are_the_exact_per_sample_gradients():
    model = group_norm_net().double()  # convolutions and a GroupNorm's affine parameters
    x, y = data(n=6, grid=8)
    fmodel = FunctionalModel(model)
    source = ShardedProjectedGradients(Projection(dim=fmodel.layout.size), model, fmodel)
    rows = source.flat_grad_matrix(sc.smse, x, y)
    expected = fmodel.layout.flatten(sc.per_sample_grads(model, sc.smse, x, y))
    torch.testing.assert_close(rows.rows, expected, **FP64)
    torch.testing.assert_close(rows.norms, expected.norm(dim=-1), **FP64)


class Twice(nn.Module):
    """One convolution applied twice: its hooks see two calls, whose gradients add up."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        return self.conv(torch.tanh(self.conv(x)))


@pytest.mark.parametrize("make", [Twice, Checkpointed])
def test_layers_run_again_are_summed_once_each_call_and_never_from_a_recomputation(make):
    """A layer called twice adds up its calls before it is projected; what activation
    checkpointing recomputes during the backward is not captured a second time."""
    torch.manual_seed(0)
    model = make().double()
    x, y = data(n=4, grid=8)
    fmodel = FunctionalModel(model)
    source = ShardedProjectedGradients(Projection(dim=fmodel.layout.size), model, fmodel)
    rows = source.flat_grad_matrix(sc.smse, x, y, chunk_size=2)
    expected = fmodel.layout.flatten(sc.per_sample_grads(model, sc.smse, x, y))
    torch.testing.assert_close(rows.rows, expected, **FP64)
    torch.testing.assert_close(rows.norms, expected.norm(dim=-1), **FP64)


class HalfPrecision(Mixer):
    """Runs its layers in bfloat16, as a mixed-precision policy does with float32 parameters."""

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x).float()


def test_bfloat16_activations_are_upcast_so_the_rows_are_float32_and_close():
    torch.manual_seed(0)
    half = HalfPrecision().float()
    full = Mixer().float()
    full.load_state_dict(half.state_dict())
    x, y = (t.float() for t in data(n=4, grid=8))
    got = both(half, 200)[0].flat_grad_matrix(sc.smse, x, y)
    expected = both(full, 200)[0].flat_grad_matrix(sc.smse, x, y)
    assert got.rows.dtype == torch.float32
    error = (got.rows - expected.rows).norm() / expected.rows.norm()
    assert float(error) < 0.05  # bfloat16 keeps 8 bits of mantissa


class Gain(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.gain * x


def test_parameters_the_hooks_do_not_cover_are_named():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), Gain())
    with pytest.raises(ValueError, match=r"\['1\.gain'\].*register_rule"):
        ShardedProjectedGradients(Projection(dim=8), model, FunctionalModel(model))


class BatchMix(nn.Module):
    """Adds the batch mean: samples interact, which a per-sample rule cannot express."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.weight * (x + x.mean(0, keepdim=True))


def test_samples_that_interact_are_caught_on_the_first_call():
    register_rule(
        BatchMix, lambda module, x, delta: {"weight": (delta * x).sum((1, 2, 3))[:, None]}
    )
    try:
        model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), BatchMix()).double()
        x, y = data(n=4, grid=8)
        source = ShardedProjectedGradients(Projection(dim=16), model, FunctionalModel(model))
        with pytest.raises(ValueError, match="samples interact"):
            source.flat_grad_matrix(sc.smse, x, y)
    finally:
        from symcoherence.coherence.gradients.layer_hooks import RULES

        RULES.pop(BatchMix)


def test_active_dropout_is_refused():
    model = mixer()
    x, y = data(n=4, grid=8)
    source = both(model, 200)[0]
    with pytest.raises(ValueError, match="eval mode"):
        source.flat_grad_matrix(sc.smse, x, y, randomness="different")
