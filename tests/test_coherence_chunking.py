"""Memory-aware automatic chunking of per-sample gradients.

``chunk_size="auto"`` measures the activation memory of the first sample's forward (the bytes
autograd saves for the backward) and takes the largest chunk whose activations and gradients fit
the memory budget beside the probe gradients the measurement holds; every path gives the loop
reference's gradients, each sample computed once.
"""

import dataclasses

import pytest
import torch
from torch import nn

import symcoherence as sc
from symcoherence.coherence.gradients.chunking import SavedBytes, resolve_chunk_size
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.testing import TOLERANCES, reference_grads

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device type; no GPU is touched
MIB = 2**20


def wide_net():
    """Activations of about 4.7 MiB per 96² sample against 37 KiB of parameters."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, padding_mode="circular"),
        nn.GELU(),
        nn.Conv2d(32, 32, 3, padding=1, padding_mode="circular"),
        nn.GELU(),
        nn.Conv2d(32, 1, 3, padding=1, padding_mode="circular"),
    ).double()


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 1, 3, padding=1))


def fields(n, grid, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, grid, grid, generator=generator, dtype=dtype)
    return x, torch.randn(n, 1, grid, grid, generator=generator, dtype=dtype)


class Counting(nn.Module):
    """Counts its forward calls (a vmapped chunk is one call)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


# --- the rule -----------------------------------------------------------------------------------


BUDGET = 16 * MIB  # less 2 · 16 · 10⁴ · 4 B = 1.28 MB of held probe gradients: 14.78 MiB


@pytest.mark.parametrize(
    ("activations", "expected"),
    [
        (None, 8),  # gradients only: 14.78 MiB / 120 kB = 129 samples, capped at 8 on CPU
        (MIB // 2, 8),  # 14.78 MiB / (2 · 0.5 MiB + 120 kB) = 13.3, capped at 8
        (MIB, 6),  # 14.78 MiB / (2 · 1 MiB + 120 kB) = 6.99
        (3 * MIB // 2, 4),  # 14.78 MiB / (2 · 1.5 MiB + 120 kB) = 4.7
        (2 * MIB, 1),  # 3.6: fewer than 4 samples on CPU run as the loop
    ],
)
def test_activations_shrink_automatic_chunks(activations, expected):
    got = resolve_chunk_size(
        "auto", 16, 10_000, torch.float32, CPU, activation_bytes=activations, budget_bytes=BUDGET
    )
    assert got == expected


@pytest.mark.parametrize(
    ("device", "num_samples", "budget", "expected"),
    [
        (CUDA, 8, 2**30, 8),  # 1 GiB holds 63 samples, but there are 8
        (CUDA, 100, 2**30, 63),  # (1 GiB − 8 MB held) / 16.9 MB = 63.0
        (CUDA, 1000, 8 * 2**30, 256),  # 505 fit: the cap of 256 samples
        (CPU, 1000, 2**30, 8),  # 58 fit, capped at 8 for vmap on CPU
    ],
)
def test_the_budget_decides_the_chunk(device, num_samples, budget, expected):
    activations = 8 * MIB  # per sample 2 · 8 MiB + 3 · 4 · 10⁴ B = 16.9 MB
    got = resolve_chunk_size(
        "auto",
        num_samples,
        10_000,
        torch.float32,
        device,
        activation_bytes=activations,
        budget_bytes=budget,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("activations", "expected"),
    [
        (MIB // 2, 16),  # 14.78 MiB / (1.6 · 0.5 MiB + 2 · 40 kB) = 16.9: no CPU cap of 8
        (3 * MIB, 3),  # 14.78 MiB / (1.6 · 3 MiB + 2 · 40 kB) = 3.03: no loop below 4
        (8 * MIB, 1),  # 1.1
    ],
)
def test_a_batched_backward_costs_less_per_sample_and_is_not_capped(activations, expected):
    got = resolve_chunk_size(
        "auto",
        16,
        10_000,
        torch.float32,
        CPU,
        activation_bytes=activations,
        budget_bytes=BUDGET,
        batched_backward=True,
    )
    assert got == expected


def test_a_measurement_that_does_not_fit_one_sample_names_the_fixes():
    # 16 probe gradients of 10⁶ parameters hold 128 MB: nothing is left of 100 MiB
    with pytest.raises(ValueError, match="max_memory.*projection.*probe_size"):
        resolve_chunk_size(
            "auto", 16, 10**6, torch.float32, CPU, activation_bytes=MIB, budget_bytes=100 * MIB
        )
    # the same budget fits when the held gradients are projected to 10⁴ numbers
    assert (
        resolve_chunk_size(
            "auto",
            16,
            10**6,
            torch.float32,
            CPU,
            activation_bytes=MIB,
            budget_bytes=100 * MIB,
            held_params=10**4,
            batched_backward=True,
        )
        == 10
    )


def test_the_default_budget_is_a_quarter_of_the_free_memory(monkeypatch):
    from symcoherence.coherence.gradients import memory

    monkeypatch.setattr(memory, "_cpu_available", lambda: 400 * MIB)
    # a quarter: 100 MiB, less 2 · 64 · 40 kB held, / (1.6 · 3 MiB + 80 kB) = 19.5
    got = resolve_chunk_size(
        "auto", 64, 10_000, torch.float32, CPU, activation_bytes=3 * MIB, batched_backward=True
    )
    assert got == 19
    assert memory.resolve_memory_budget(0.5, CPU) == 200 * MIB
    assert memory.resolve_memory_budget(12345, CPU) == 12345


@pytest.mark.parametrize("bad", [0, -5, 0.0, 1.5, float("nan"), "1GB", True])
def test_max_memory_is_bytes_or_a_fraction(bad):
    with pytest.raises(ValueError, match="max_memory"):
        sc.coherence.MeasurementSpec(max_memory=bad)


def test_fixed_and_full_chunks_are_unchanged():
    assert resolve_chunk_size(5, 16, 10, torch.float32, CPU, activation_bytes=10**9) == 5
    assert resolve_chunk_size(None, 16, 10, torch.float32, CPU, activation_bytes=10**9) == 16
    with pytest.raises(ValueError, match="positive int"):
        resolve_chunk_size(0, 16, 10, torch.float32, CPU)


# --- the measurement ----------------------------------------------------------------------------


def test_saved_bytes_counts_each_saved_activation_once_and_no_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    x = torch.randn(4, 16)
    with SavedBytes(exclude=list(net.parameters())) as saved:
        out = net(x)
    # Linear saves its input, tanh its output, which the second Linear saves again
    assert saved.total == (4 * 16 + 4 * 32) * 4
    out.sum().backward()


def test_the_first_sample_sizes_the_chunks_and_runs_once():
    net = Counting(wide_net())
    x, y = fields(6, 96)
    fmodel = FunctionalModel(net, layer_hooks=False, max_memory=32 * MIB)
    with sc.coherence.gradients.parameters.grad_mode():
        blocks = list(fmodel.grad_blocks(sc.smse, x, y, chunk_size="auto"))
    sizes = [samples.stop - samples.start for samples, _ in blocks]
    assert sizes == [1] * 6  # 2 · 4.7 MiB per sample: 32 MiB allows fewer than 4, so a loop
    assert net.calls == 6  # the measured first sample is not computed again
    expected = reference_grads(net, sc.smse, x, y, list(net.parameters()))
    got = torch.cat([fmodel.layout.flatten(block) for _, block in blocks])
    torch.testing.assert_close(got, expected, **TOLERANCES["fp64"])


def test_small_activations_keep_wide_vmapped_chunks():
    net = Counting(tiny_net().double())
    x, y = fields(10, 8)
    fmodel = FunctionalModel(net, layer_hooks=False)
    with sc.coherence.gradients.parameters.grad_mode():
        blocks = list(fmodel.grad_blocks(sc.smse, x, y, chunk_size="auto"))
    assert [samples.stop - samples.start for samples, _ in blocks] == [1, 8, 1]
    assert net.calls == 3
    expected = reference_grads(net, sc.smse, x, y, list(net.parameters()))
    got = torch.cat([fmodel.layout.flatten(block) for _, block in blocks])
    torch.testing.assert_close(got, expected, **TOLERANCES["fp64"])


def test_layer_hooks_batch_past_the_vmap_cap_after_one_check():
    net = Counting(tiny_net().double())
    x, y = fields(10, 8)
    fmodel = FunctionalModel(net)
    with sc.coherence.gradients.parameters.grad_mode():
        blocks = list(fmodel.grad_blocks(sc.smse, x, y, chunk_size="auto"))
    assert fmodel.engine == "layers"
    assert [samples.stop - samples.start for samples, _ in blocks] == [1, 9]
    # the measured first sample, the hooks checked once on two samples against it, one chunk
    assert net.calls == 3
    expected = reference_grads(net, sc.smse, x, y, list(net.parameters()))
    got = torch.cat([fmodel.layout.flatten(block) for _, block in blocks])
    torch.testing.assert_close(got, expected, **TOLERANCES["fp64"])


@pytest.mark.parametrize("chunk_size", ["auto", 1, 4, None])
def test_every_chunking_gives_the_same_influence(chunk_size):
    net = wide_net()
    x, y = fields(5, 32)
    kwargs = dict(group=sc.groups.C4(), field_type=sc.FieldType(["scalar"]))
    loop = sc.orbit_influence(net, sc.smse, x, y, chunk_size=1, **kwargs)
    got = sc.orbit_influence(net, sc.smse, x, y, chunk_size=chunk_size, **kwargs)
    torch.testing.assert_close(got.matrix, loop.matrix, **TOLERANCES["fp64"])


def test_a_measurement_records_its_budget_and_the_chunk_it_took(monkeypatch):
    from symcoherence.coherence.gradients import memory

    monkeypatch.setattr(memory, "_cpu_available", lambda: 4096 * MIB)
    x, y = fields(12, 16, dtype=torch.float32)
    spec = sc.coherence.MeasurementSpec(group="C4", field_type=["scalar"], resamples=100)
    wide = sc.coherence.measure(tiny_net(), sc.smse, x, y, spec).influence
    assert wide.info["memory_budget"] == 1024 * MIB  # the default quarter of the free memory
    assert wide.info["chunk_size"] == 12  # the bras of an element in one chunk
    narrow = sc.coherence.measure(
        tiny_net(), sc.smse, x, y, dataclasses.replace(spec, max_memory=200_000)
    ).influence
    assert narrow.info["memory_budget"] == 200_000
    assert 1 <= narrow.info["chunk_size"] < 12
    torch.testing.assert_close(narrow.matrix, wide.matrix, **TOLERANCES["fp32"])
    assert dataclasses.replace(spec, max_memory=100).max_memory == 100
    with pytest.raises(ValueError, match="max_memory"):
        sc.coherence.measure(tiny_net(), sc.smse, x, y, dataclasses.replace(spec, max_memory=100))
