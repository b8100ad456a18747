"""In-repo stand-ins for patterns of third-party models (no third-party library is imported).

Each class reproduces, in a few lines, the one behaviour of a real layer that troubles
``torch.func``; the spectral layer with complex weights is ``helpers.zoo.Spectral``.
"""

import torch
from torch import nn
from torch.nn import functional as F


class InPlaceSpectral(nn.Module):
    """neuraloperator's ``SpectralConv``: a fresh ``torch.zeros`` spectrum written in place.

    ``vmap`` rejects the write of per-sample values into a tensor that is not batched.
    """

    def __init__(self, channels=1, modes=2):
        super().__init__()
        self.modes = modes
        self.weight = nn.Parameter(
            torch.randn(channels, channels, modes, modes, dtype=torch.cfloat) / channels
        )
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        spectrum = torch.fft.rfft2(x)
        out = torch.zeros(
            x.shape[0],
            self.weight.shape[1],
            *spectrum.shape[-2:],
            dtype=spectrum.dtype,
            device=x.device,
        )
        out[..., : self.modes, : self.modes] = torch.einsum(
            "bixy,ioxy->boxy", spectrum[..., : self.modes, : self.modes], self.weight
        )
        return torch.tanh(torch.fft.irfft2(out, s=x.shape[-2:]) + self.pointwise(x))


class _Doubled(torch.autograd.Function):
    """``2x`` in the old style (``forward(ctx, ...)``), as custom CUDA kernels are often wrapped."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad_output):
        return 2 * grad_output


class CustomFunction(nn.Module):
    """A layer behind an old-style ``torch.autograd.Function``, which ``torch.func`` refuses."""

    def __init__(self, channels=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")

    def forward(self, x):
        return torch.tanh(_Doubled.apply(self.conv(x)))


class ScaledCustomFunction(CustomFunction):
    """:class:`CustomFunction` with a raw parameter of its own (a learned output scale), which no
    standard layer owns, so that per-sample gradients need ``torch.func`` (or the loop)."""

    def __init__(self, channels=1):
        super().__init__(channels)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * super().forward(x)


class CachedFilterConv(nn.Module):
    """escnn's ``R2Conv``: the filter is expanded from coefficients over a fixed basis.

    In training mode ``forward`` expands it on every call; ``eval()`` caches the expanded filter in
    a buffer and ``forward`` then convolves with the cache, so the loss no longer depends on the
    parameters.
    """

    def __init__(self, channels=1, basis_size=3):
        super().__init__()
        self.coefficients = nn.Parameter(torch.randn(channels, channels, basis_size))
        self.register_buffer("basis", torch.randn(basis_size, 3, 3))

    def expand(self):
        return torch.einsum("oib,bhw->oihw", self.coefficients, self.basis)

    def train(self, mode=True):
        if not mode:
            self.register_buffer("filter", self.expand().detach())
        elif hasattr(self, "filter"):
            del self.filter
        return super().train(mode)

    def forward(self, x):
        weight = self.expand() if self.training else self.filter
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), weight)


class HashingConv(nn.Conv2d):
    """escnn modules hash their content: ``__hash__`` reads tensor data with ``.numpy()``.

    Inside a ``torch.func`` transform ``.numpy()`` fails, so hashing the module there (as
    ``named_modules()`` does) raises.
    """

    def __init__(self, channels=1):
        super().__init__(channels, channels, 3, padding=1, padding_mode="circular")

    def __hash__(self):
        return hash(self.weight.detach().numpy().tobytes())


class PartlyUnused(nn.Module):
    """A model with a head that ``forward`` never calls."""

    def __init__(self, channels=1):
        super().__init__()
        self.body = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")
        self.head = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return torch.tanh(self.body(x))


class DeadUnit(nn.Module):
    """A ReLU unit that is off for every input: its parameters get exactly zero gradient."""

    def __init__(self, channels=1, hidden=2):
        super().__init__()
        self.first = nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="circular")
        self.second = nn.Conv2d(hidden, channels, 1)
        with torch.no_grad():
            self.first.bias[0] = -1e3  # unit 0 stays at ReLU's flat side

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


class SharedConv(nn.Module):
    """One convolution registered under two names and applied twice (a shared layer)."""

    def __init__(self, channels=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")
        self.again = self.conv

    def forward(self, x):
        return self.again(torch.tanh(self.conv(x)))


class TiedConv(nn.Module):
    """Two convolutions that share one weight tensor but keep their own biases (tied weights)."""

    def __init__(self, channels=1):
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")
        self.second = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular")
        self.second.weight = self.first.weight

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


class RandomNoise(nn.Module):
    """Adds noise in ``forward``: a random operation that ``randomness="error"`` refuses."""

    def __init__(self, channels=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.conv(x) + 0.1 * torch.randn_like(x)
