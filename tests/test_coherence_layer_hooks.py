"""Per-sample gradients from layer hooks (one batched backward) against one autograd call per sample.

Every supported layer and option (strides, dilations, groups, padding modes and strings, missing
biases, layers called twice, frozen parameters) must give the loop's gradients; models the hooks
cannot see through (a weight also used outside its layer, samples that interact, a layer whose
output does not depend on the input) must fall back to ``vmap`` and still give them.
"""

import pytest
import torch
from torch import nn

import symcoherence as sc
from symcoherence.coherence.gradients import layer_hooks
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layer_hooks import LayerGradients, register_rule
from symcoherence.coherence.gradients.parameters import grad_mode
from symcoherence.models import FNO2d, UNet2d
from symcoherence.testing import TOLERANCES, reference_grads


def fields(n, channels, grid, *, targets=None, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, grid, grid, generator=generator, dtype=torch.float64)
    shape = targets or (n, channels, grid, grid)
    return x, torch.randn(*shape, generator=generator, dtype=torch.float64)


def engine_grads(model, x, y, chunk_size=3, parameter_filter=None):
    """Flat per-sample gradients through :class:`FunctionalModel`, and the engine it used."""
    fmodel = FunctionalModel(model, parameter_filter)
    with grad_mode():
        matrix = fmodel.flat_grad_matrix(sc.smse, x, y, chunk_size).rows
    return matrix, fmodel.engine


def check(model, x, y, engine="layers", parameter_filter=None):
    got, used = engine_grads(model, x, y, parameter_filter=parameter_filter)
    params = [
        p
        for name, p in model.named_parameters()
        if parameter_filter is None or name in parameter_filter
    ]
    torch.testing.assert_close(
        got, reference_grads(model, sc.smse, x, y, params), **TOLERANCES["fp64"]
    )
    assert used == engine


def conv_net(**options):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, **options), nn.Tanh(), nn.Conv2d(4, 2, 1), nn.GELU()
    ).double()


@pytest.mark.parametrize(
    "options",
    [
        dict(padding=1),
        dict(padding=1, padding_mode="circular", stride=2),
        dict(padding=2, padding_mode="reflect", dilation=2),
        dict(padding=(1, 0), padding_mode="replicate", bias=False),
        dict(padding="same", dilation=(1, 2)),
        dict(padding="valid", stride=(2, 1)),
        dict(padding=1, groups=2),
    ],
    ids=[
        "zeros",
        "circular-stride",
        "reflect-dilation",
        "replicate-nobias",
        "same",
        "valid",
        "groups",
    ],
)
def test_convolutions_match_the_loop(options):
    net = conv_net(**options)
    x = fields(5, 2, 10)[0]
    y = torch.randn_like(net(x))
    check(net, x, y)


class Tokens(nn.Module):
    """Linear and LayerNorm layers on ``(B, T, D)`` tokens, one Linear applied twice."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.norm = nn.LayerNorm((8,))
        self.mix = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # (B, H·W, C)
        hidden = self.mix(torch.tanh(self.mix(self.norm(self.embed(tokens)))))
        return self.head(hidden).transpose(1, 2).reshape(x.shape)


def test_linear_and_layer_norm_on_tokens_and_a_layer_called_twice_match_the_loop():
    torch.manual_seed(0)
    net = Tokens().double()
    check(net, *fields(5, 4, 4))


def test_group_norm_and_a_two_dimensional_layer_norm_match_the_loop():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.GELU(),
        nn.LayerNorm((6, 6), bias=False),
        nn.Conv2d(4, 1, 3, padding=1),
    ).double()
    with torch.no_grad():  # non-trivial affine parameters
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    check(net, *fields(4, 1, 6))


@pytest.mark.parametrize("attention", [False, True], ids=["unet", "unet-attention"])
def test_the_unet_presets_match_the_loop(attention):
    torch.manual_seed(0)
    net = UNet2d(1, 1, width=8, depth=2, attention=attention, heads=2).double()
    check(net, *fields(4, 1, 16))


def test_a_parameter_filter_leaves_frozen_layers_out():
    net = conv_net(padding=1)
    x, _ = fields(4, 2, 8)
    y = torch.randn_like(net(x))
    check(net, x, y, parameter_filter=["0.weight", "2.bias"])


# --- what the hooks cannot cover, or cannot see -------------------------------------------------


class Raw(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.gain * self.conv(x)


class Standardized(nn.Conv2d):
    """A Conv2d subclass with its own forward (weight standardization)."""

    def forward(self, x):
        weight = self.weight - self.weight.mean()
        return self._conv_forward(x, weight, self.bias)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
        self.second.weight = self.first.weight

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


@pytest.mark.parametrize(
    "build",
    [
        Raw,
        lambda: Standardized(1, 1, 3, padding=1),
        Tied,
        lambda: nn.Conv2d(1, 1, 3, dtype=torch.complex64),
    ],
    ids=["raw-parameter", "overridden-forward", "tied-weights", "complex"],
)
def test_models_outside_the_rules_are_not_covered(build):
    model = build()
    params = {name: p.detach() for name, p in model.named_parameters()}
    assert LayerGradients.covering(model, params) is None


class WeightOutside(nn.Module):
    """The conv weight also enters outside the conv's forward (a weight penalty in the output)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + self.conv.weight.square().sum()


class BatchCentered(nn.Module):
    """Subtracts the batch mean: samples interact, so a batch of one is not a sample of a batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        return out - 0.5 * out.mean(0, keepdim=True)


class ConstantBranch(nn.Module):
    """A Linear applied to a constant buffer (a learned bias field): its output ignores the input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.field = nn.Linear(4, 16)
        self.register_buffer("code", torch.ones(4))

    def forward(self, x):
        return self.conv(x) + self.field(self.code).reshape(1, 1, 4, 4)


@pytest.mark.parametrize(
    "cls",
    [WeightOutside, BatchCentered, ConstantBranch],
    ids=["weight-outside-its-layer", "samples-interact", "output-ignores-input"],
)
def test_what_hooks_cannot_see_falls_back_to_vmap_with_the_loop_gradients(cls):
    torch.manual_seed(0)
    net = cls().double()
    check(net, *fields(5, 1, 4), engine="vmap")


class StackedCopies(nn.Module):
    """Runs the batch and its mirror image through one conv as one batch of 2·n rows."""

    def __init__(self, sample_major: bool):
        super().__init__()
        self.conv, self.sample_major = nn.Conv2d(1, 2, 3, padding=1), sample_major

    def forward(self, x):
        copies = torch.stack([x, x.flip(-1)], dim=1 if self.sample_major else 0)
        out = torch.tanh(self.conv(copies.flatten(0, 1)))
        out = out.unflatten(0, (x.shape[0], 2) if self.sample_major else (2, x.shape[0]))
        return out.sum(1 if self.sample_major else 0)


def test_a_layer_that_sees_copies_of_the_batch_adds_up_each_samples_copies():
    """Copy-major stacking (as GroupAveraged) stays on the hooks; sample-major stacking, which the
    hooks would sum wrongly, is caught by the check and falls back to vmap — exact either way."""
    torch.manual_seed(0)
    x, y = fields(5, 1, 6, targets=(5, 2, 6, 6))
    check(StackedCopies(sample_major=False).double(), x, y, engine="layers")
    check(StackedCopies(sample_major=True).double(), x, y, engine="vmap")
    averaged = sc.models.GroupAveraged(
        conv_net(padding=1, padding_mode="circular"), sc.groups.D4(), ["scalar", "scalar"]
    )
    check(averaged.double(), *fields(5, 2, 6), engine="layers")


def test_active_dropout_goes_through_vmap():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Dropout(0.5), nn.Conv2d(2, 1, 1))
    net = net.double()
    x, y = fields(4, 1, 6)
    fmodel = FunctionalModel(net)
    with grad_mode():
        list(fmodel.grad_blocks(sc.smse, x, y, 2, randomness="different"))
    assert fmodel.engine == "vmap"


class Shared(nn.Module):
    """One convolution registered under two names and applied twice: its calls add up."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
        self.again = self.conv

    def forward(self, x):
        return self.again(torch.tanh(self.conv(x)))


def test_a_layer_registered_twice_and_called_twice_is_covered():
    torch.manual_seed(0)
    check(Shared().double(), *fields(4, 1, 6))


def test_batch_norm_in_eval_mode_is_covered_and_in_training_mode_refused():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Conv2d(3, 1, 1)
    )
    net = net.double()
    x, y = fields(6, 1, 6)
    net(x)  # running statistics that are not the defaults
    with torch.no_grad():
        net[1].weight.add_(0.3 * torch.randn(3, dtype=torch.float64))
    check(net.eval(), x, y)
    with pytest.raises(ValueError, match="training mode"):
        sc.per_sample_grads(net.train(), sc.smse, x, y)


# --- rules for layers of one's own --------------------------------------------------------------


@pytest.mark.parametrize("positional_embedding", [False, True])
def test_the_fno_spectral_layers_have_a_rule_that_matches_the_loop(positional_embedding):
    torch.manual_seed(0)
    net = FNO2d(1, 1, modes=3, width=4, layers=2, positional_embedding=positional_embedding)
    check(net.double(), *fields(5, 1, 12))


class Gain(nn.Module):
    """A learned per-channel gain: ``y = g ⊙ x``."""

    def __init__(self, channels):
        super().__init__()
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(channels))

    def forward(self, x):
        return self.gain[:, None, None] * x


class BadGain(Gain):
    """The same layer with a rule that forgets the input."""


def gain_net(cls):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), cls(2), nn.Tanh(), nn.Conv2d(2, 1, 1))


@pytest.fixture
def own_rules(monkeypatch):
    """Rules registered in the test are forgotten after it."""
    monkeypatch.setattr(layer_hooks, "RULES", dict(layer_hooks.RULES))


def test_a_registered_rule_covers_a_layer_of_ones_own(own_rules):
    register_rule(Gain, lambda module, x, delta: {"gain": (delta * x).sum((2, 3))})
    check(gain_net(Gain).double(), *fields(4, 1, 6))


def test_a_wrong_rule_falls_back_to_vmap_instead_of_giving_wrong_gradients(own_rules):
    register_rule(BadGain, lambda module, x, delta: {"gain": delta.sum((2, 3))})
    check(gain_net(BadGain).double(), *fields(4, 1, 6), engine="vmap")


def test_register_rule_refuses_what_is_not_a_layer_type_and_a_rule():
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_rule(Gain(2), lambda module, x, delta: {})
    with pytest.raises(TypeError, match="callable"):
        register_rule(Gain, "gain")


class Checkpointed(nn.Module):
    """Recomputes its first block during the backward (non-reentrant activation checkpointing)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular")
        self.b = nn.Conv2d(4, 1, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        hidden = checkpoint(lambda t: torch.tanh(self.a(t)), x, use_reentrant=False)
        return self.b(hidden)


def test_activation_checkpointing_keeps_the_hooks_exact():
    """Non-reentrant activation checkpointing recomputes a block during the backward; what the
    hooks capture there never reaches the rows, which stay those of plain autograd."""
    torch.manual_seed(0)
    net = Checkpointed().double()
    x, y = (
        torch.randn(6, 1, 8, 8, dtype=torch.float64),
        torch.randn(6, 1, 8, 8, dtype=torch.float64),
    )
    fmodel = FunctionalModel(net)
    with grad_mode():
        rows = fmodel.flat_grad_matrix(sc.smse, x, y, chunk_size=3).rows
    assert fmodel.engine == "layers"
    expected = reference_grads(net, sc.smse, x, y, list(net.parameters()))
    torch.testing.assert_close(rows, expected, **TOLERANCES["fp64"])
