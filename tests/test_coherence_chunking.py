"""Memory-aware automatic chunking of per-sample gradients.

``chunk_size="auto"`` measures the activation memory of the first sample's forward (the bytes
autograd saves for the backward) and sizes the vmapped chunks so that their activations and
gradients stay within half of the memory of the gradients the call returns; every path gives
the loop reference's gradients, each sample computed once.
"""

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


@pytest.mark.parametrize(
    ("activations", "expected"),
    [
        (None, 8),  # gradients only: 16 MiB / 120 kB = 139 samples, capped at 8 on CPU
        (MIB // 2, 8),  # 16 MiB / (2 · 0.5 MiB + 120 kB) = 14, capped at 8
        (MIB, 7),  # 16 MiB / (2 · 1 MiB + 120 kB) = 7.6
        (3 * MIB // 2, 5),  # 16 MiB / (2 · 1.5 MiB + 120 kB) = 5.1
        (2 * MIB, 1),  # 3.9: fewer than 4 samples on CPU run as the loop
    ],
)
def test_activations_shrink_automatic_chunks(activations, expected):
    # N·P·b = 16 · 10⁴ · 4 = 640 kB lies below the 16 MiB CPU floor
    got = resolve_chunk_size("auto", 16, 10_000, torch.float32, CPU, activation_bytes=activations)
    assert got == expected


@pytest.mark.parametrize(
    ("device", "num_samples", "expected"),
    [
        (CUDA, 8, 8),  # the 1 GiB floor off the CPU holds 63 samples, but there are 8
        (CUDA, 100, 63),  # N·P·b = 4 MB: the floor, 1 GiB / 16.9 MB = 63.5
        (CUDA, 100_000, 236),  # N·P·b = 4 GB: 236 samples
        (CUDA, 10**6, 254),  # N·P·b = 40 GB, capped at 4 GiB: 254 samples (cap 256)
        (CPU, 10**6, 8),  # capped at 256 MiB on CPU: 15 samples, capped at 8
    ],
)
def test_budget_follows_the_returned_gradients_within_bounds(device, num_samples, expected):
    activations = 8 * MIB  # per sample 2 · 8 MiB + 3 · 4 · 10⁴ B = 16.9 MB
    got = resolve_chunk_size(
        "auto", num_samples, 10_000, torch.float32, device, activation_bytes=activations
    )
    assert got == expected


@pytest.mark.parametrize(
    ("activations", "expected"),
    [
        (MIB // 2, 18),  # 16 MiB / (1.6 · 0.5 MiB + 2 · 40 kB) = 18.5: no CPU cap of 8
        (3 * MIB, 3),  # 16 MiB / (1.6 · 3 MiB + 2 · 40 kB) = 3.3: no switch to the loop below 4
        (11 * MIB, 1),  # 0.9
    ],
)
def test_a_batched_backward_costs_less_per_sample_and_is_not_capped(activations, expected):
    got = resolve_chunk_size(
        "auto", 64, 10_000, torch.float32, CPU, activation_bytes=activations, batched_backward=True
    )
    assert got == expected


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
    fmodel = FunctionalModel(net, layer_hooks=False)
    with sc.coherence.gradients.parameters.grad_mode():
        blocks = list(fmodel.grad_blocks(sc.smse, x, y, chunk_size="auto"))
    sizes = [samples.stop - samples.start for samples, _ in blocks]
    assert sizes == [1] * 6  # 2 · 4.7 MiB per sample: memory allows fewer than 4, so a loop
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
