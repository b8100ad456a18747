"""Shared pieces of the emulator backbones: input checks, presets, rebuild specs and attention.

Every backbone maps ``(B, C_in, H, W) -> (B, C_out, H, W)``, records its constructor arguments so
that a checkpoint can rebuild it (:meth:`Backbone.spec` and :func:`build_from_spec`), and validates
its input shape with messages that say what was expected and how to fix it.

Example:
    >>> from symcoherence.models import UNet2d
    >>> net = UNet2d(1, 1, width=8, depth=1)
    >>> spec = net.spec()
    >>> spec["class_path"], spec["init_args"]["width"]
    ('symcoherence.models.unet.UNet2d', 8)
    >>> type(build_from_spec(spec)).__name__
    'UNet2d'
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of the backbones: channel counts, recorded arguments and input validation.

    Subclasses call :meth:`_record` with their resolved constructor arguments and
    :meth:`_check_input` at the top of ``forward``.
    """

    in_channels: int
    out_channels: int

    def _record(self, **init_args: Any) -> None:
        for name in ("in_channels", "out_channels"):
            value = init_args[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{type(self).__name__}: {name} must be a positive integer, got {value!r}"
                )
        self.in_channels = init_args["in_channels"]
        self.out_channels = init_args["out_channels"]
        self._init_args = dict(init_args)

    def spec(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": {...}}`` that :func:`build_from_spec` rebuilds."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self._init_args}

    def _check_input(self, x: torch.Tensor, multiple: int = 1, what: str = "") -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with ``multiple | H, W``."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} expects inputs (B, {self.in_channels}, H, W); got shape "
                f"{tuple(x.shape)}. Set in_channels to the number of data channels (a time history "
                "of k frames of a c-channel field has k·c channels)"
            )
        height, width = x.shape[-2:]
        if height % multiple or width % multiple:
            raise ValueError(
                f"{name} needs H and W divisible by {multiple}{what}; got a {height}×{width} grid "
                f"(shape {tuple(x.shape)}). Use a grid that is a multiple of {multiple} or change "
                "the architecture"
            )


def resolve_preset(
    owner: str, presets: dict[str, dict[str, Any]], preset: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Preset values updated with the ``overrides`` that are not ``None``.

    Raises:
        ValueError: if ``preset`` is not a key of ``presets``.
    """
    if preset not in presets:
        raise ValueError(f"{owner}: unknown preset {preset!r}; choose one of {sorted(presets)}")
    values = dict(presets[preset])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return values


def check_sizes(owner: str, sizes: dict[str, Any], minimums: dict[str, int] | None = None) -> None:
    """Raise ``ValueError`` unless every value in ``sizes`` is at least its minimum (default 1).

    Example:
        >>> check_sizes("Net", {"width": 8, "depth": 0}, {"depth": 0})
        >>> check_sizes("Net", {"width": 0, "depth": 2})
        Traceback (most recent call last):
        ...
        ValueError: Net needs width >= 1, depth >= 1; got {'width': 0, 'depth': 2}
    """
    minimums = minimums or {}
    if any(value < minimums.get(key, 1) for key, value in sizes.items()):
        bounds = ", ".join(f"{key} >= {minimums.get(key, 1)}" for key in sizes)
        raise ValueError(f"{owner} needs {bounds}; got {sizes}")


def module_spec(module: nn.Module) -> dict[str, Any] | None:
    """The rebuild spec of ``module`` if it can produce one, else ``None``."""
    spec = getattr(module, "spec", None)
    return spec() if callable(spec) else None


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``spec["class_path"](**spec["init_args"])``; nested specs are built first.

    Only ``torch.nn.Module`` subclasses are built.

    Raises:
        ValueError: if ``spec`` has no ``class_path`` or it does not name an ``nn.Module`` class.
    """
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(
            "a module spec is a dict {'class_path': 'package.module.Class', 'init_args': {...}}; "
            f"got {spec!r}"
        )
    module_name, _, class_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"class_path {spec['class_path']!r} does not name a torch.nn.Module class")
    init_args = {
        key: build_from_spec(value) if isinstance(value, dict) and "class_path" in value else value
        for key, value in spec.get("init_args", {}).items()
    }
    return cls(**init_args)


def num_groups(channels: int, at_most: int = 8) -> int:
    """Largest divisor of ``channels`` that is at most ``at_most`` (GroupNorm group count)."""
    return math.gcd(channels, at_most)


class SelfAttention(nn.Module):
    r"""Multi-head self-attention over tokens ``(B, N, D)``, without position information.

    .. math:: \mathrm{softmax}\big(Q K^\top / \sqrt{d}\big) V \text{ per head}, \quad d = D / h.

    Written with plain matrix products so that it works under ``torch.func.vmap``. It is
    equivariant under any permutation of the ``N`` tokens.

    Args:
        dim: token width ``D``.
        heads: number of heads ``h``; must divide ``dim``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)``."""
        batch, count, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, count, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores = query @ key.transpose(-1, -2) / math.sqrt(dim // self.heads)
        mixed = scores.softmax(dim=-1) @ value
        return self.out(mixed.transpose(1, 2).reshape(batch, count, dim))
