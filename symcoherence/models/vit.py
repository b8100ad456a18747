r"""A vision transformer on patches of a periodic grid.

The input is cut into ``(H/p)·(W/p)`` tokens by a strided convolution (stride ``p``, kernel
``p + 2⌊p/2⌋``, circular padding ``⌊p/2⌋``, so neighbouring patches overlap across the periodic
boundary too), a learned absolute position embedding is added, ``depth`` pre-norm transformer
blocks

.. math:: t \mapsto t + \mathrm{MHSA}(\mathrm{LN}(t)), \qquad
          t \mapsto t + \mathrm{MLP}(\mathrm{LN}(t)),

mix the tokens, and a linear head maps each token back to its ``p × p`` patch of output channels.

Presets (``preset=``; explicit arguments override them):

* ``"small"`` — patch 4, 96 channels, 4 blocks, 4 heads, MLP ratio 2: 0.33M parameters for one
  input and output channel on 64².
* ``"paper"`` — patch 4, 256 channels, 8 blocks, 8 heads, MLP ratio 2.5: 5.0M parameters for one
  input and output channel on 128².

Example:
    >>> import torch
    >>> net = ViT2d(1, 1, grid_size=16, patch_size=4, dim=16, depth=1, heads=2)
    >>> net(torch.randn(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import torch
from torch import nn

from symcoherence.models.base import Backbone, SelfAttention, check_sizes, resolve_preset

PRESETS = {
    "small": {"patch_size": 4, "dim": 96, "depth": 4, "heads": 4, "mlp_ratio": 2},
    "paper": {"patch_size": 4, "dim": 256, "depth": 8, "heads": 8, "mlp_ratio": 2.5},
}


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on tokens ``(B, N, D)``; equivariant under token permutations."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = round(mlp_ratio * dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention then MLP, each as a residual update."""
        tokens = tokens + self.attention(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class ViT2d(Backbone):
    """Vision transformer ``(B, C_in, H, W) -> (B, C_out, H, W)`` (see the module docstring).

    Equivariance:
        With ``position_embedding=False``: exactly equivariant (to round-off) under periodic
        translations by multiples of the patch size ``p`` in each direction (such a shift permutes
        the tokens cyclically, and everything after the circular patch embedding commutes with
        token permutations). **Not** equivariant under other shifts: the patch grid does not move
        with a shift by a non-multiple of ``p``. With the learned absolute position embedding on
        (the default) no non-trivial translation is a symmetry once the embedding is trained.
        Never equivariant under rotations and reflections.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        grid_size: the grid ``H = W`` (or ``(H, W)``) the position embedding is built for.
        preset: ``"small"`` or ``"paper"``; supplies every argument left at ``None``.
        patch_size: patch side ``p``; must divide ``H`` and ``W``.
        dim: token width.
        depth: number of transformer blocks.
        heads: attention heads; must divide ``dim``.
        mlp_ratio: hidden width of the MLP in units of ``dim``.
        position_embedding: add a learned absolute position embedding to the tokens.

    Raises:
        ValueError: on an unknown preset, a grid not divisible by the patch size or bad sizes; at
            the first forward, on inputs whose channel count or grid does not fit.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid_size: int | tuple[int, int] = 64,
        preset: str = "small",
        patch_size: int | None = None,
        dim: int | None = None,
        depth: int | None = None,
        heads: int | None = None,
        mlp_ratio: float | None = None,
        position_embedding: bool = True,
    ):
        super().__init__()
        overrides = {
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
        }
        config = resolve_preset("ViT2d", PRESETS, preset, overrides)
        grid = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        self._record(
            in_channels=in_channels,
            out_channels=out_channels,
            grid_size=list(grid),
            preset=preset,
            position_embedding=position_embedding,
            **config,
        )
        check_sizes("ViT2d", config)
        patch = config["patch_size"]
        if grid[0] % patch or grid[1] % patch:
            raise ValueError(
                f"ViT2d: grid_size {grid[0]}×{grid[1]} is not divisible by patch_size={patch}; "
                "choose a patch size that divides the grid"
            )
        self.grid = grid
        self.patch_size = patch
        width = config["dim"]
        self.embed = nn.Conv2d(
            in_channels,
            width,
            kernel_size=patch + 2 * (patch // 2),
            stride=patch,
            padding=patch // 2,
            padding_mode="circular",
        )
        tokens = (grid[0] // patch) * (grid[1] // patch)
        self.position = (
            nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, tokens, width), std=0.02))
            if position_embedding
            else None
        )
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(width, config["heads"], config["mlp_ratio"])
                for _ in range(config["depth"])
            )
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_channels * patch * patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)`` on the grid given at construction."""
        self._check_input(x, self.patch_size, f" (the patch size of {type(self).__name__})")
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(
                f"ViT2d was built for a {self.grid[0]}×{self.grid[1]} grid but got inputs of shape "
                f"{tuple(x.shape)}; set grid_size={list(x.shape[-2:])}"
            )
        batch = x.shape[0]
        rows, cols = self.grid[0] // self.patch_size, self.grid[1] // self.patch_size
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        if self.position is not None:
            tokens = tokens + self.position
        patches = self.head(self.norm(self.blocks(tokens)))
        p = self.patch_size
        patches = patches.reshape(batch, rows, cols, self.out_channels, p, p)
        return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, self.out_channels, *self.grid)
