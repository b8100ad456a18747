"""Emulator backbones, the exactly equivariant group-averaged wrapper and the LightningModule.

All backbones map ``(B, C_in, H, W) -> (B, C_out, H, W)`` on a periodic grid, accept a ``preset``
name (``"small"`` for CPU experiments, ``"paper"`` for the published scale), work under
``torch.func.functional_call`` + ``vmap(grad)`` and state their symmetries in an "Equivariance:"
section of their docstring.

Example:
    >>> import torch
    >>> from symcoherence.models import FNO2d, UNet2d, ViT2d
    >>> x = torch.randn(2, 1, 16, 16)
    >>> [tuple(m(x).shape) for m in (UNet2d(1, 1, width=8), FNO2d(1, 1, modes=4), ViT2d(1, 1, grid_size=16, dim=16, depth=1))]
    [(2, 1, 16, 16), (2, 1, 16, 16), (2, 1, 16, 16)]
"""

from symcoherence.models.fno import FNO2d
from symcoherence.models.group_averaged import GroupAveraged
from symcoherence.models.module import EmulatorModule
from symcoherence.models.sfno import SFNO  # imports torch_harmonics only when an SFNO is built
from symcoherence.models.unet import UNet2d
from symcoherence.models.vit import ViT2d

__all__ = ["SFNO", "EmulatorModule", "FNO2d", "GroupAveraged", "UNet2d", "ViT2d"]
