"""Patterns of third-party models, reproduced by in-repo stand-ins, against the loop reference.

In-place writes and old-style autograd.Functions that ``vmap`` rejects fall back to the
per-sample loop with one warning (or, where standard layers own every parameter, run through layer
hooks without one); parameters the loss does not depend on raise one clear error on
every path; modules whose hash reads tensor data and tied weights work; complex parameters work
under every metric and chunk size.
"""

import warnings

import pytest
import torch
from helpers.stand_ins import (
    CachedFilterConv,
    CustomFunction,
    DeadUnit,
    HashingConv,
    InPlaceSpectral,
    PartlyUnused,
    RandomNoise,
    ScaledCustomFunction,
    SharedConv,
    TiedConv,
)
from helpers.zoo import PSEUDO, SCALAR, cast, data, make, stepped_adam
from torch.func import functional_call, grad

import symcoherence as sc
from symcoherence.coherence import GaussNewton
from symcoherence.testing import reference_grads, reference_orbit_influence, tolerance_for

CHUNK_SIZES = [1, 3, None, "auto"]
VMAPPED = [3, None, "auto"]  # chunk sizes that take the vmapped path for these tiny models
FALLBACK = "falling back to a per-sample loop; pass chunk_size=1 to choose it directly"
ELEMENTS = ["e", "r", "s"]


def build(cls, dtype=torch.float64, seed=0):
    """``cls()`` with parameters and buffers in ``dtype`` (complex ones in its complex dtype)."""
    torch.manual_seed(seed)
    model = cast(cls(), dtype)
    for buffer in model.buffers():
        buffer.data = buffer.data.to(dtype)
    return model


def close(actual, expected, dtype=torch.float64):
    torch.testing.assert_close(actual, expected, **tolerance_for(dtype))


def loop_reference(model, x, y):
    return reference_grads(model, sc.smse, x, y, list(model.parameters()))


# --- models vmap cannot batch (neuraloperator's SpectralConv, custom autograd.Functions) -----


@pytest.mark.parametrize("chunk_size", VMAPPED)
@pytest.mark.parametrize(
    ("cls", "cause"),
    [(InPlaceSpectral, "inplace arithmetic"), (ScaledCustomFunction, "setup_context")],
    ids=["in_place_write", "custom_function"],
)
def test_vmap_failures_fall_back_to_the_loop_once(cls, cause, chunk_size):
    model = build(cls)
    x, y = data(n=5)
    loop = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=1, flatten=True)
    with pytest.warns(UserWarning, match=FALLBACK) as record:
        got = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
    assert len(record) == 1  # once per call, not once per chunk
    assert cause in str(record[0].message)  # names the cause
    torch.testing.assert_close(got, loop, **sc.testing.TOLERANCES["exact"])
    close(got, loop_reference(model, x, y))


@pytest.mark.parametrize("chunk_size", VMAPPED)
def test_layer_hooks_batch_a_custom_function_that_vmap_refuses(chunk_size):
    # every parameter belongs to an nn.Conv2d, so one batched backward with layer hooks gives the
    # per-sample gradients; plain autograd runs the old-style Function, and nothing warns
    model = build(CustomFunction)
    x, y = data(n=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
    close(got, loop_reference(model, x, y))


# torch warns about its own torch.jit.script when the first jvp of the process loads its
# decompositions, and pytest.warns passes that warning on from its own module
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "metric",
    ["identity", GaussNewton(damping=1e-1, tol=1e-12, max_iter=200)],
    ids=["identity", "gauss_newton"],
)
def test_fallback_warns_once_per_measurement_and_matches_reference(metric):
    model = build(InPlaceSpectral)
    x, y = data()
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, elements=ELEMENTS, metric=metric)
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    with pytest.warns(UserWarning, match=FALLBACK) as record:
        fast = sc.orbit_influence(model, sc.smse, x, y, chunk_size=2, **kwargs)
    fallbacks = [w for w in record if FALLBACK in str(w.message)]
    assert len(fallbacks) == 1  # kets and every element's bras share one decision
    close(fast.matrix, slow.matrix)


def test_errors_the_loop_would_not_avoid_still_raise():
    model = build(InPlaceSpectral)
    x, y = data()

    def mismatched(prediction, target):
        return (prediction - target[..., :3]).pow(2).mean()

    for chunk_size in (1, 3):
        with pytest.raises(RuntimeError, match="must match the size"):
            sc.per_sample_grads(model, mismatched, x, y, chunk_size=chunk_size)
    noisy = build(RandomNoise)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        sc.per_sample_grads(noisy, sc.smse, x, y, chunk_size=3)
    # one mask for all samples is something only vmap can give
    with pytest.raises(RuntimeError, match="inplace arithmetic"):
        sc.per_sample_grads(model, sc.smse, x, y, chunk_size=3, randomness="same")


# --- parameters that do not enter the forward pass (escnn's R2Conv in eval mode) -------------


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_cached_filter_in_eval_mode_raises_one_clear_error(chunk_size):
    model = build(CachedFilterConv).eval()
    x, y = data()
    with pytest.raises(ValueError) as loop_error:
        sc.per_sample_grads(model, sc.smse, x, y, chunk_size=1)
    with pytest.raises(ValueError) as error:
        sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size)
    message = str(error.value)
    assert message == str(loop_error.value)  # every path says the same
    assert "['coefficients']" in message
    assert "eval_mode=False" in message and "parameter_filter" not in message  # nothing is used
    with pytest.raises(ValueError, match="does not depend on"):
        sc.orbit_influence(model, sc.smse, x, y, sc.groups.C4(), PSEUDO, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [1, "auto"])
def test_cached_filter_in_training_mode_matches_reference(chunk_size):
    model = build(CachedFilterConv).train()
    x, y = data()
    got = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
    close(got, loop_reference(model, x, y))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_unused_head_is_named_unless_the_filter_leaves_it_out(chunk_size):
    model = build(PartlyUnused)
    x, y = data()
    with pytest.raises(ValueError) as error:
        sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size)
    message = str(error.value)
    assert "['head.weight', 'head.bias']" in message and "body." not in message
    assert "parameter_filter" in message
    kwargs = dict(group=sc.groups.C4(), field_type=SCALAR, parameter_filter=["body.weight"])
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    fast = sc.orbit_influence(model, sc.smse, x, y, chunk_size=chunk_size, **kwargs)
    close(fast.matrix, slow.matrix)


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_parameters_with_zero_gradient_are_connected(chunk_size):
    model = build(DeadUnit)
    x, y = data()
    grads = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size)
    assert grads["first.weight"][:, 0].abs().max() == 0  # dead ReLU unit: zero, yet used
    assert grads["first.weight"][:, 1].abs().max() > 0
    flat = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
    close(flat, loop_reference(model, x, y))


# --- modules whose __hash__ reads tensor data (escnn) ----------------------------------------


def test_hashing_module_works_on_every_path():
    model = build(HashingConv)
    x, y = data()
    params = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="storage"):  # the stand-in does break torch.func ...
        grad(lambda theta: functional_call(model, theta, (x,)).sum())(params)
    expected = loop_reference(model, x, y)
    for chunk_size in CHUNK_SIZES:  # ... yet no path falls back (a warning would fail the test)
        got = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
        close(got, expected)
    metric = GaussNewton(damping=1e-1, tol=1e-12, max_iter=200)  # vmapped jvp / vjp of f
    kwargs = dict(group=sc.groups.C4(), field_type=SCALAR, metric=metric)
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    close(sc.orbit_influence(model, sc.smse, x, y, **kwargs).matrix, slow.matrix)


@pytest.mark.parametrize("cls", [SharedConv, TiedConv])
def test_shared_and_tied_weights_get_the_gradient_of_every_use(cls):
    model = build(cls)
    x, y = data()
    originals = list(model.named_parameters(remove_duplicate=False))
    assert len({id(p) for _, p in originals}) < len(originals)
    for chunk_size in (1, 3):
        got = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=chunk_size, flatten=True)
        close(got, loop_reference(model, x, y))
    after = [p for _, p in model.named_parameters(remove_duplicate=False)]
    assert all(p is q for (_, p), q in zip(originals, after, strict=True))  # restored afterwards


# --- complex parameters under every metric and chunk size ------------------------------------


METRICS = [
    "identity",
    "adam",
    "gauss_newton_cg",
    "gauss_newton_subspace",
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("metric", METRICS)
def test_complex_parameters_match_reference(metric, chunk_size, dtype):
    model = make("spectral", dtype)
    assert model.weight.is_complex()
    x, y = data(dtype=dtype)
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, elements=ELEMENTS)
    if metric == "adam":
        kwargs.update(metric="adam", optimizer=stepped_adam(model, x, y, steps=3))
    elif metric.startswith("gauss_newton"):
        solver = metric.removeprefix("gauss_newton_")
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        kwargs.update(metric=GaussNewton(damping=1e-1, solver=solver, tol=tol, max_iter=200))
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    fast = sc.orbit_influence(model, sc.smse, x, y, chunk_size=chunk_size, **kwargs)
    assert fast.matrix.dtype == dtype
    close(fast.matrix, slow.matrix, dtype)
    close(fast.ket_self, slow.ket_self, dtype)
    assert fast.matrix.abs().max() > 1e-3  # a non-trivial comparison
