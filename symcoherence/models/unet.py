r"""A U-Net with circular padding, GroupNorm residual blocks and optional bottleneck attention.

Level ``l = 0 … depth`` works at resolution ``H / 2^l`` with ``width · 2^{min(l, 3)}`` channels.
Each level of the encoder runs ``blocks`` residual blocks

.. math:: h \mapsto h + \mathrm{conv}(\sigma(\mathrm{GN}(\mathrm{conv}(\sigma(\mathrm{GN}(h)))))),

(``σ`` = GELU, ``GN`` = GroupNorm, 3×3 circular convolutions) and downsamples with a stride-2 3×3
circular convolution; the decoder upsamples (nearest, then a 3×3 circular convolution),
concatenates the skip connection and runs ``blocks + 1`` residual blocks (the first one merges the
skip, as in the usual diffusion-model U-Net layout). The bottleneck is two residual
blocks with, optionally, multi-head self-attention over its ``H/2^depth × W/2^depth`` positions
between them (no position embedding).

Presets (``preset=``; explicit arguments override them):

* ``"small"`` — width 16, depth 2, 1 block per level, no attention: 0.28M parameters for one
  input and one output channel; for CPU experiments.
* ``"paper"`` — width 32, depth 4 (four downsamplings: an 8×8 bottleneck on 128²), 2 blocks per
  level, 8-head attention at the bottleneck: 13.4M parameters for one input and output channel.

Example:
    >>> import torch
    >>> net = UNet2d(2, 2, width=8, depth=2)
    >>> net(torch.randn(3, 2, 16, 16)).shape
    torch.Size([3, 2, 16, 16])
"""

from __future__ import annotations

import torch
from torch import nn

from symcoherence.models.base import (
    Backbone,
    SelfAttention,
    check_sizes,
    num_groups,
    resolve_preset,
)

PRESETS = {
    "small": {"width": 16, "depth": 2, "blocks": 1, "attention": False, "heads": 4},
    "paper": {"width": 32, "depth": 4, "blocks": 2, "attention": True, "heads": 8},
}


def circular_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3×3 convolution with circular (periodic) padding."""
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, padding_mode="circular"
    )


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``(B, C_in, H, W) -> (B, C_out, H, W)`` (1×1 skip if needed)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(num_groups(in_channels), in_channels),
            nn.GELU(),
            circular_conv(in_channels, out_channels),
            nn.GroupNorm(num_groups(out_channels), out_channels),
            nn.GELU(),
            circular_conv(out_channels, out_channels),
        )
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x``."""
        return self.skip(x) + self.body(x)


class GridAttention(nn.Module):
    """Residual self-attention over all grid positions of ``(B, C, H, W)`` (pre-GroupNorm)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels)
        self.attention = SelfAttention(channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + attention(GN(x))`` with positions as tokens."""
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        mixed = self.attention(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        return x + mixed


class UNet2d(Backbone):
    """U-Net emulator backbone ``(B, C_in, H, W) -> (B, C_out, H, W)`` (see the module docstring).

    Equivariance:
        Exactly equivariant (to round-off) under periodic integer translations by multiples of the
        total stride ``2^depth`` in each direction: every layer is a circular convolution,
        stride-2 subsampling, nearest upsampling, GroupNorm (whole-field statistics) or attention
        without position information. **Not** equivariant under other translations (the stride-2
        sampling grid does not move with a one-cell shift) nor under rotations and reflections
        (the kernels are unconstrained). Wrap it in :class:`GroupAveraged` for exact D4
        equivariance.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        preset: ``"small"`` or ``"paper"``; supplies every argument left at ``None``.
        width: channels at full resolution.
        depth: number of stride-2 downsamplings; ``H`` and ``W`` must be divisible by ``2^depth``.
        blocks: residual blocks per level in the encoder (the decoder has one more).
        attention: self-attention at the bottleneck.
        heads: attention heads; must divide the bottleneck width.

    Raises:
        ValueError: on an unknown preset or non-positive sizes; at the first forward, on inputs
            whose channel count or grid does not fit.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        preset: str = "small",
        width: int | None = None,
        depth: int | None = None,
        blocks: int | None = None,
        attention: bool | None = None,
        heads: int | None = None,
    ):
        super().__init__()
        overrides = {
            "width": width,
            "depth": depth,
            "blocks": blocks,
            "attention": attention,
            "heads": heads,
        }
        config = resolve_preset("UNet2d", PRESETS, preset, overrides)
        self._record(in_channels=in_channels, out_channels=out_channels, preset=preset, **config)
        sizes = {key: config[key] for key in ("width", "depth", "blocks")}
        check_sizes("UNet2d", sizes, {"depth": 0})
        self.depth = config["depth"]
        channels = [config["width"] * 2 ** min(level, 3) for level in range(self.depth + 1)]
        self.lift = circular_conv(in_channels, channels[0])
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        for level in range(self.depth):
            blocks_here = [
                ResidualBlock(channels[level], channels[level]) for _ in range(config["blocks"])
            ]
            self.encoder.append(nn.Sequential(*blocks_here))
            self.down.append(circular_conv(channels[level], channels[level + 1], stride=2))
        bottom = channels[-1]
        middle: list[nn.Module] = [ResidualBlock(bottom, bottom)]
        if config["attention"]:
            middle.append(GridAttention(bottom, config["heads"]))
        middle.append(ResidualBlock(bottom, bottom))
        self.bottleneck = nn.Sequential(*middle)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(self.depth)):
            self.up.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    circular_conv(channels[level + 1], channels[level]),
                )
            )
            blocks_here = [ResidualBlock(2 * channels[level], channels[level])]
            blocks_here += [
                ResidualBlock(channels[level], channels[level]) for _ in range(config["blocks"])
            ]
            self.decoder.append(nn.Sequential(*blocks_here))
        self.head = nn.Sequential(
            nn.GroupNorm(num_groups(channels[0]), channels[0]),
            nn.GELU(),
            circular_conv(channels[0], out_channels),
        )

    @property
    def stride(self) -> int:
        """Total stride ``2^depth``: the grid must be a multiple of it."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)``; ``H`` and ``W`` divisible by :attr:`stride`."""
        self._check_input(x, self.stride, f" (the total stride 2^depth of depth={self.depth})")
        h = self.lift(x)
        skips = []
        for block, down in zip(self.encoder, self.down, strict=True):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(h)
        for up, block in zip(self.up, self.decoder, strict=True):
            h = block(torch.cat([up(h), skips.pop()], dim=1))
        return self.head(h)
