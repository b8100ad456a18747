"""Tiny data, models and a recording logger shared by the callback tests (no tests here).

Everything is small enough that a Trainer run takes well under a second per epoch on one CPU core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import symcoherence as sc

GRID = 8


def make_pairs(count: int, seed: int, channels: int = 1, grid: int = GRID):
    """Random fields and a nonlinear, D4-equivariant next state (so the data has the symmetry)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, channels, grid, grid, generator=generator)
    neighbours = sum(torch.roll(x, s, d) for s in (1, -1) for d in (-1, -2))
    y = 0.5 * x + 0.1 * neighbours + 0.2 * torch.tanh(x) ** 2
    return x, y


class TinyData(pl.LightningDataModule):
    """Declares field type and group and offers ``probe_batch``, like the real datamodules."""

    def __init__(self, n_train=16, n_val=12, batch_size=4, channels=1, grid=GRID, declare=True):
        super().__init__()
        self.train_pairs = make_pairs(n_train, 1, channels, grid)
        self.val_pairs = make_pairs(n_val, 2, channels, grid)
        self.batch_size = batch_size
        if declare:
            self.field_type = sc.FieldType(["scalar"] * channels)
            self.target_field_type = self.field_type
            self.symmetry_group = sc.groups.D4()

    def train_dataloader(self):
        return DataLoader(TensorDataset(*self.train_pairs), batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.val_pairs), batch_size=self.batch_size)

    def probe_batch(self, n, split="val", seed=0):
        x, y = self.val_pairs if split == "val" else self.train_pairs
        index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        return x[index], y[index]


class PlainData(TinyData):
    """No field type, group or probe_batch: the monitor must be told or draw from val data."""

    probe_batch = None  # type: ignore[assignment]

    def __init__(self, **kwargs):
        super().__init__(declare=False, **kwargs)


def tiny_backbone(channels: int = 1) -> nn.Module:
    """A small circular CNN (equivariant to shifts, not to D4)."""
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1, padding_mode="circular"),
        nn.Tanh(),
        nn.Conv2d(4, channels, 3, padding=1, padding_mode="circular"),
    )


class TinyModule(pl.LightningModule):
    """``backbone`` + per-sample ``loss_fn``, as the monitor looks for them."""

    def __init__(self, backbone: nn.Module | None = None, lr: float = 1e-2):
        super().__init__()
        self.backbone = backbone if backbone is not None else tiny_backbone()
        self.lr = lr

    def loss_fn(self, prediction, target):
        return sc.smse(prediction, target)

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = sc.smse(self(x), y).mean()
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", sc.smse(self(x), y).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call in memory: ``self.records = [(step, {key: value})]``."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.records.append((step, {k: float(v) for k, v in metrics.items()}))

    def values(self, key: str) -> dict[int, float]:
        """``{step: value}`` of one key."""
        return {step: m[key] for step, m in self.records if key in m}


def trainer(callbacks=(), logger=None, **kwargs) -> pl.Trainer:
    """A quiet CPU Trainer for tiny runs."""
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=list(callbacks),
    )
    options.update(kwargs)
    return pl.Trainer(**options)
