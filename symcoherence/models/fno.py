r"""A Fourier neural operator: spectral convolutions with complex weights on a periodic grid.

Each of the ``layers`` Fourier layers updates the hidden field ``h`` (``width`` channels) as

.. math:: h \mapsto \sigma\big(\mathcal{F}^{-1}[R \cdot \mathcal{F} h] + W h\big),

where ``F`` is the 2-D real FFT, ``R`` multiplies the lowest ``modes`` wavenumbers in each
direction (``-modes <= k_y < modes``, ``0 <= k_x < modes``) by learned complex ``width × width``
matrices and drops the rest, ``W`` is a 1×1 convolution and ``σ`` is GELU (not applied after the
last layer). A 1×1 lifting maps the input (and, optionally, the grid coordinates) to ``width``
channels and a two-layer 1×1 projection maps back to the output channels.

The complex weights are stored as real tensors with a trailing ``(real, imag)`` axis, so
``model.double()`` turns them into complex128 weights as it turns the rest into float64.

Presets (``preset=``; explicit arguments override them):

* ``"small"`` — 8 modes, width 16, 4 layers: 0.26M parameters for one input and output channel.
* ``"paper"`` — 12 modes, width 64, 4 layers (the classic FNO configuration): 9.5M parameters.

Example:
    >>> import torch
    >>> net = FNO2d(1, 1, modes=4, width=8, layers=2)
    >>> net(torch.randn(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import torch
from torch import nn

from symcoherence.coherence.gradients.layer_hooks import register_rule
from symcoherence.coherence.metrics.kronecker import register_curvature_blocks
from symcoherence.models.base import Backbone, check_sizes, resolve_preset

PRESETS = {
    "small": {"modes": 8, "width": 16, "layers": 4},
    "paper": {"modes": 12, "width": 64, "layers": 4},
}


class SpectralConv2d(nn.Module):
    """Multiply the lowest ``modes`` Fourier modes by complex matrices: ``(B, C, H, W) -> same``.

    Args:
        channels: input and output channels.
        modes: retained wavenumbers per direction (``-modes <= k_y < modes``, ``0 <= k_x < modes``).
    """

    def __init__(self, channels: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / channels
        # Two blocks (k_y >= 0 and k_y < 0), each (C_in, C_out, modes, modes, [real, imag]).
        self.weight = nn.Parameter(scale * torch.rand(2, channels, channels, modes, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spectral convolution of ``x`` of shape ``(B, C, H, W)``."""
        height, width = x.shape[-2:]
        modes = self.modes
        if 2 * modes > height or modes > width // 2 + 1:
            raise ValueError(
                f"FNO2d with modes={modes} needs a grid of at least {2 * modes}×{2 * (modes - 1)} "
                f"(H×W); got {height}×{width}. Lower modes or use a finer grid"
            )
        spectrum = torch.fft.rfft2(x)
        weight = torch.complex(self.weight[..., 0], self.weight[..., 1]).to(spectrum.dtype)
        low = torch.einsum("bixy,ioxy->boxy", spectrum[..., :modes, :modes], weight[0])
        high = torch.einsum("bixy,ioxy->boxy", spectrum[..., -modes:, :modes], weight[1])
        batch, channels = low.shape[:2]
        gap = low.new_zeros(batch, channels, height - 2 * modes, modes)
        kept = torch.cat([low, gap, high], dim=-2)
        return torch.fft.irfft2(kept, s=(height, width))


def spectral_conv_grads(
    module: SpectralConv2d, x: torch.Tensor, delta: torch.Tensor
) -> dict[str, torch.Tensor]:
    r"""Per-sample weight gradients of a :class:`SpectralConv2d` from its input and output gradient.

    With ``S = rfft2(x)`` and ``G`` the gradient of the loss with respect to the kept spectrum
    (the adjoint of ``irfft2`` applied to ``δ``), each retained mode contributes
    ``∇W_{io} = \overline{S_i} G_o`` (torch's convention for complex gradients), split into the
    real and imaginary parts that the weight stores. Registered as the layer hooks' rule, so that
    per-sample gradients of an FNO take one batched backward.
    """
    modes = module.modes
    spectrum = torch.fft.rfft2(x)
    kept = torch.zeros_like(spectrum)
    _, adjoint = torch.func.vjp(lambda k: torch.fft.irfft2(k, s=x.shape[-2:]), kept)
    (upstream,) = adjoint(delta)
    blocks = [
        torch.einsum(
            "nixy,noxy->nioxy", spectrum[..., rows, :modes].conj(), upstream[..., rows, :modes]
        )
        for rows in (slice(None, modes), slice(-modes, None))
    ]
    return {"weight": torch.view_as_real(torch.stack(blocks, dim=1))}


register_rule(SpectralConv2d, spectral_conv_grads)
# the Kronecker-factored Gauss–Newton metric: one dense curvature block per retained mode
# (half-plane, k_y, k_x), over the (C_in, C_out, re/im) entries of its weight
register_curvature_blocks(SpectralConv2d, (0, 3, 4))


class FNO2d(Backbone):
    """Fourier neural operator ``(B, C_in, H, W) -> (B, C_out, H, W)`` (see the module docstring).

    Equivariance:
        With ``positional_embedding=False`` (the default): exactly equivariant (to round-off) under
        every periodic integer translation, since the FFT turns a shift into a phase that the
        per-mode weights and the 1×1 layers commute with. With ``positional_embedding=True`` the
        coordinates ``(x, y) ∈ [0, 1)²`` enter as two extra input channels and translation
        equivariance is **broken**. Never equivariant under rotations and reflections (the
        spectral weights are unconstrained and the ``k_x``/``k_y`` truncation is not symmetric).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        preset: ``"small"`` or ``"paper"``; supplies every argument left at ``None``.
        modes: retained Fourier modes per direction; needs ``H >= 2·modes``.
        width: hidden channels.
        layers: number of Fourier layers.
        positional_embedding: append the grid coordinates as input channels.

    Raises:
        ValueError: on an unknown preset or non-positive sizes; at the first forward, on inputs
            whose channel count does not fit or a grid too small for ``modes``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        preset: str = "small",
        modes: int | None = None,
        width: int | None = None,
        layers: int | None = None,
        positional_embedding: bool = False,
    ):
        super().__init__()
        config = resolve_preset(
            "FNO2d", PRESETS, preset, {"modes": modes, "width": width, "layers": layers}
        )
        self._record(
            in_channels=in_channels,
            out_channels=out_channels,
            preset=preset,
            positional_embedding=positional_embedding,
            **config,
        )
        check_sizes("FNO2d", config)
        hidden = config["width"]
        self.positional_embedding = positional_embedding
        self.lift = nn.Conv2d(in_channels + 2 * positional_embedding, hidden, 1)
        self.spectral = nn.ModuleList(
            SpectralConv2d(hidden, config["modes"]) for _ in range(config["layers"])
        )
        self.pointwise = nn.ModuleList(
            nn.Conv2d(hidden, hidden, 1) for _ in range(config["layers"])
        )
        self.project = nn.Sequential(
            nn.Conv2d(hidden, 2 * hidden, 1), nn.GELU(), nn.Conv2d(2 * hidden, out_channels, 1)
        )
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)``."""
        self._check_input(x)
        if self.positional_embedding:
            x = torch.cat([x, grid_coordinates(x)], dim=1)
        h = self.lift(x)
        last = len(self.spectral) - 1
        for index, (spectral, pointwise) in enumerate(
            zip(self.spectral, self.pointwise, strict=True)
        ):
            h = spectral(h) + pointwise(h)
            if index < last:
                h = self.activation(h)
        return self.project(h)


def grid_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Coordinates ``(x, y) = (j / W, i / H)`` of grid point ``(i, j)``, shaped ``(B, 2, H, W)``."""
    batch, _, height, width = x.shape
    ys = torch.arange(height, dtype=x.dtype, device=x.device) / height
    xs = torch.arange(width, dtype=x.dtype, device=x.device) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)
