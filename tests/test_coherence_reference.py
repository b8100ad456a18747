"""The fast engine equals the slow loop-of-autograd reference (DESIGN §4)."""

import pytest
import torch
from helpers.zoo import PSEUDO, ZOO, data, make  # noqa: F401

import symcoherence as sc
from symcoherence.testing import reference_grads, reference_orbit_influence
from symcoherence.testing import tolerance_for as tol_for

DTYPES = [torch.float64, torch.float32]
ELEMENTS = ["e", "r", "s", "sr3"]


def close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, **tol_for(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp64", "fp32"])
@pytest.mark.parametrize("name", list(ZOO))
def test_orbit_influence_matches_reference(name, dtype):
    model = make(name, dtype)
    x, y = data(dtype=dtype)
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, elements=ELEMENTS)
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    fast = sc.orbit_influence(model, sc.smse, x, y, **kwargs)
    assert fast.matrix.dtype == dtype and fast.elements == tuple(ELEMENTS)
    close(fast.matrix, slow.matrix, dtype)
    close(fast.bra_self, slow.bra_self, dtype)
    close(fast.ket_self, slow.ket_self, dtype)
    assert fast.matrix.abs().max() > 1e-3  # a non-trivial comparison


@pytest.mark.parametrize("chunk_size", [1, 3, None, "auto"])
def test_parameter_filter_and_chunking_match_reference(chunk_size):
    model = make("group_norm")
    x, y = data(n=5)

    def only_convolutions(name, parameter):
        return name.startswith(("0.", "3."))

    kwargs = dict(group=sc.groups.C4(), field_type=PSEUDO, parameter_filter=only_convolutions)
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    fast = sc.orbit_influence(model, sc.smse, x, y, chunk_size=chunk_size, **kwargs)
    close(fast.matrix, slow.matrix, torch.float64)
    full = sc.orbit_influence(model, sc.smse, x, y, sc.groups.C4(), PSEUDO)
    assert not torch.allclose(full.matrix, fast.matrix)  # the filter changed what is measured


@pytest.mark.parametrize("name", list(ZOO))
def test_per_sample_grads_match_autograd_loop(name):
    model = make(name)
    x, y = data(n=5)
    params = [p for p in model.parameters()]
    expected = reference_grads(model, sc.smse, x, y, params)
    flat = sc.per_sample_grads(model, sc.smse, x, y, chunk_size=2, flatten=True)
    close(flat, expected, torch.float64)
    as_dict = sc.per_sample_grads(model, sc.smse, x, y)
    assert list(as_dict) == [n for n, _ in model.named_parameters()]
    for (pname, p), grads in zip(model.named_parameters(), as_dict.values(), strict=True):
        assert grads.shape == (5, *p.shape), pname
        assert grads.dtype == p.dtype
    first = torch.cat(
        [
            (torch.view_as_real(g[0]) if g.is_complex() else g[0]).reshape(-1)
            for g in as_dict.values()
        ]
    )
    close(first, expected[0], torch.float64)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_outer_no_grad_and_inference_mode_do_not_break_it(context):
    model = make("circular_conv")
    x, y = data()
    expected = reference_grads(model, sc.smse, x, y, list(model.parameters()))
    with context():
        x_inner, y_inner = x.clone(), y.clone()  # inference tensors under inference_mode
        got = sc.per_sample_grads(model, sc.smse, x_inner, y_inner, flatten=True)
        result = sc.orbit_influence(model, sc.smse, x_inner, y_inner, sc.groups.C4(), PSEUDO)
    close(got, expected, torch.float64)
    slow = reference_orbit_influence(model, sc.smse, x, y, sc.groups.C4(), PSEUDO)
    close(result.matrix, slow.matrix, torch.float64)


def test_adam_metric_matches_reference():
    model = make("spectral")
    x, y = data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    for _ in range(3):
        optimizer.zero_grad()
        torch.func.vmap(sc.smse)(model(x), y).mean().backward()
        optimizer.step()
    kwargs = dict(group=sc.groups.D4(), field_type=PSEUDO, metric="adam", optimizer=optimizer)
    slow = reference_orbit_influence(model, sc.smse, x, y, **kwargs)
    fast = sc.orbit_influence(model, sc.smse, x, y, **kwargs)
    close(fast.matrix, slow.matrix, torch.float64)
    identity = sc.orbit_influence(model, sc.smse, x, y, sc.groups.D4(), PSEUDO)
    assert not torch.allclose(identity.matrix, fast.matrix)


def test_automatic_chunk_sizes():
    from symcoherence.coherence.gradients.chunking import resolve_chunk_size

    cpu, budget = torch.device("cpu"), 2**30
    assert resolve_chunk_size("auto", 16, 1_000, torch.float32, cpu, budget_bytes=budget) == 8
    assert resolve_chunk_size("auto", 3, 1_000, torch.float32, cpu, budget_bytes=budget) == 3
    # memory: 150 MiB less 128 MB of probe gradients leave room for 2 vmapped samples: a loop
    assert resolve_chunk_size("auto", 16, 10**6, torch.float32, cpu, budget_bytes=150 * 2**20) == 1
    assert resolve_chunk_size(None, 16, 10_000_000, torch.float32, cpu) == 16
    assert resolve_chunk_size(5, 16, 10, torch.float32, cpu) == 5
