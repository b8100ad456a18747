"""Probe set and configuration checks of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`.

Checks the constructor's arguments, converts field types, finds the model and loss to
differentiate, draws the fixed, seeded probe set (from the datamodule's ``probe_batch`` or its dataloaders' datasets) and checks
field types, group, model modes and model output against the data before the first measurement.

Example:
    >>> import torch
    >>> from symcoherence.callbacks._probes import probe_fingerprint
    >>> x = torch.zeros(2, 1, 4, 4)
    >>> probe_fingerprint(x, x) == probe_fingerprint(x.clone(), x.clone())
    True
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from symcoherence.coherence import METRIC_NAMES, NORMALIZATIONS, smse
from symcoherence.coherence.metrics import Metric
from symcoherence.coherence.per_sample import check_modes
from symcoherence.groups import FieldType, Group

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SPLITS = ("train", "val", "test")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _positive_int_or_none(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def check_arguments(
    *,
    elements: Sequence[str] | None,
    metric: str | Metric,
    normalization: str,
    every_n_train_steps: int | None,
    every_n_epochs: int | None,
    probe_size: int,
    probe_split: str,
    probe_seed: int,
    rollout_steps: int,
    chunk_size: int | str | None,
    on_error: str,
    prefix: str,
    loss_fn: LossFn | None,
) -> None:
    """Raise a ``ValueError`` or ``TypeError`` naming the fix for an invalid monitor argument.

    The arguments are those of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`; the group
    and field types are checked where they are resolved.
    """
    if not (isinstance(metric, Metric) or metric in METRIC_NAMES):
        raise ValueError(
            f"metric must be one of {list(METRIC_NAMES)} or a symcoherence.coherence.Metric, got {metric!r}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}"
        )
    _positive_int_or_none(every_n_train_steps, "every_n_train_steps")
    _positive_int_or_none(every_n_epochs, "every_n_epochs")
    if every_n_train_steps is None and every_n_epochs is None:
        raise ValueError(
            "the monitor would never measure: set every_n_train_steps=<n> and/or "
            "every_n_epochs=<n> (or remove the callback)"
        )
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 2:
        raise ValueError(
            f"probe_size must be an integer >= 2 (the normalization and the off-diagonal "
            f"baseline need several probes; 48 is the default), got {probe_size!r}"
        )
    if probe_split not in SPLITS:
        raise ValueError(f"probe_split must be one of {list(SPLITS)}, got {probe_split!r}")
    if isinstance(probe_seed, bool) or not isinstance(probe_seed, int):
        raise TypeError(f"probe_seed must be an int, got {probe_seed!r}")
    if isinstance(rollout_steps, bool) or not isinstance(rollout_steps, int) or rollout_steps < 0:
        raise ValueError(
            f"rollout_steps must be an integer >= 0 (0 disables), got {rollout_steps!r}"
        )
    if not (
        chunk_size in ("auto", None)
        or (isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size > 0)
    ):
        raise ValueError(
            f"chunk_size must be 'auto', None or a positive integer, got {chunk_size!r}"
        )
    if on_error not in ("warn", "raise"):
        raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
    if not isinstance(prefix, str):
        raise TypeError(
            f"prefix must be a string such as '' or 'probe/', got {type(prefix).__name__}"
        )
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(pred, target) -> scalar, got {type(loss_fn).__name__}"
        )
    if elements is not None and (isinstance(elements, str) or not elements):
        raise ValueError(
            f"elements must be a non-empty list of element names such as ['e', 'r'], got {elements!r}"
        )


def as_field_type(value: FieldType | Sequence[str] | None, name: str) -> FieldType | None:
    """``value`` as a :class:`FieldType` (a list of kinds is converted); ``None`` stays ``None``."""
    if value is None or isinstance(value, FieldType):
        return value
    if isinstance(value, (list, tuple)):
        return FieldType(value)
    raise TypeError(
        f"{name} must be a FieldType (e.g. FieldType(['pseudoscalar'])) or a list of kinds, "
        f"got {type(value).__name__}"
    )


def probe_fingerprint(inputs: torch.Tensor, targets: torch.Tensor) -> str:
    """SHA-256 of the probe tensors' shapes, dtypes and bytes (identifies the probe set)."""
    digest = hashlib.sha256()
    for tensor in (inputs, targets):
        plain = tensor.detach().to("cpu", copy=True).contiguous()
        digest.update(f"{tuple(plain.shape)}{plain.dtype}".encode())
        digest.update(plain.view(torch.uint8).numpy().tobytes() if plain.numel() else b"")
    return digest.hexdigest()


def find_model(pl_module: nn.Module) -> nn.Module:
    """The module differentiated: ``pl_module.backbone`` when it is a module, else ``pl_module``."""
    backbone = getattr(pl_module, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else pl_module


def measured_model(pl_module: nn.Module) -> nn.Module:
    """:func:`find_model`, or a float32 copy of it when its parameters are in half precision."""
    model = find_model(pl_module)
    if any(p.dtype in _LOW_PRECISION for p in model.parameters()):
        return copy.deepcopy(model).float()
    return model


def find_loss(pl_module: nn.Module, override: LossFn | None) -> LossFn:
    """``override`` if given, else ``pl_module.loss_fn`` if callable, else :func:`~symcoherence.smse`."""
    if override is not None:
        return override
    module_loss = getattr(pl_module, "loss_fn", None)
    return module_loss if callable(module_loss) else smse


def compute_dtype(pl_module: nn.Module) -> torch.dtype:
    """float64 for float64 models, float32 otherwise (half precision is measured in float32)."""
    floats = [p.dtype for p in find_model(pl_module).parameters() if p.is_floating_point()]
    return torch.float64 if floats and floats[0] == torch.float64 else torch.float32


def draw_probe(
    trainer: Any, pl_module: nn.Module, size: int, split: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Draw the fixed probe set ``(inputs (N, C, H, W), targets, identity)``.

    From ``trainer.datamodule.probe_batch(size, split=split, seed=seed)`` when the datamodule has
    it; otherwise ``size`` distinct items of the ``{split}_dataloader()`` dataset, chosen by a
    generator seeded with ``seed`` (the global RNG is not used). ``identity`` records the source,
    split, seed, size, the indices (dataset draw) and a SHA-256 of the tensors.
    """
    datamodule = trainer.datamodule
    identity: dict[str, Any] = {"split": split, "seed": seed, "size": size}
    if callable(getattr(datamodule, "probe_batch", None)):
        inputs, targets = datamodule.probe_batch(size, split=split, seed=seed)
        identity["source"] = "probe_batch"
    else:
        dataset = _dataset(trainer, pl_module, split)
        if len(dataset) < size:
            raise ValueError(
                f"the {split} dataset has {len(dataset)} samples but probe_size={size}; lower "
                f"probe_size or provide more {split} data"
            )
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        indices = sorted(order[:size].tolist())
        pairs = [dataset[i] for i in indices]
        if not all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in pairs):
            raise TypeError(
                f"{split} dataset items must be (input, target) pairs, got "
                f"{type(pairs[0]).__name__}; give the datamodule a probe_batch(n, split, seed) "
                "method returning (inputs, targets)"
            )
        inputs = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        targets = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        identity.update(source=f"{split}_dataloader", indices=indices)
    if inputs.shape[0] != size or targets.shape[0] != size:
        raise ValueError(
            f"expected {size} probe pairs, got inputs {tuple(inputs.shape)} and targets "
            f"{tuple(targets.shape)}"
        )
    identity["sha256"] = probe_fingerprint(inputs, targets)
    dtype = compute_dtype(pl_module)
    device = next(iter(pl_module.parameters())).device
    return inputs.to(device, dtype), targets.to(device, dtype), identity


def _dataset(trainer: Any, pl_module: nn.Module, split: str) -> Any:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    hook = f"{split}_dataloader"
    source = trainer.datamodule if trainer.datamodule is not None else pl_module
    if not is_overridden(hook, source):
        raise ValueError(
            f"no probe data: {type(source).__name__} has neither probe_batch(n, split, seed) nor "
            f"{hook}(); add one of them or choose another probe_split ({list(SPLITS)})"
        )
    loader = getattr(source, hook)()
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    elif isinstance(loader, dict):
        loader = next(iter(loader.values()))
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            f"{hook}() must return a DataLoader over a map-style dataset to draw probes from, "
            f"got {type(loader).__name__}; give the datamodule a probe_batch(n, split, seed) method"
        )
    return dataset


def check_configuration(
    group: Group,
    elements: Sequence[str],
    field_type: FieldType,
    target_field_type: FieldType,
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> None:
    """Raise a ``ValueError`` naming the fix unless data, group and model fit together.

    Checks: the probe tensors match the field types; every element acts on the grid; no layer
    normalizes with batch statistics or draws dropout masks in the mode the model is measured in;
    the model maps one probe input to the shape of one target.
    """
    for kind, tensor, name, argument in (
        (field_type, inputs, "probe inputs", "field_type"),
        (target_field_type, targets, "probe targets", "target_field_type"),
    ):
        try:
            kind.check(tensor, name)
        except ValueError as err:
            raise ValueError(
                f"{err}. Pass {argument}=... to OrbitCoherenceMonitor or fix the datamodule's "
                f"{argument}"
            ) from None
    try:
        group.orbit(inputs[:1], field_type, elements)
        group.orbit(targets[:1], target_field_type, elements)
    except ValueError as err:
        raise ValueError(
            f"group {group.name} does not act on the data (shape {tuple(inputs.shape)}): {err}. "
            "Pass a group=... that matches the grid"
        ) from None
    try:
        check_modes(model, "error")
    except ValueError as err:
        raise ValueError(f"{err} (or keep OrbitCoherenceMonitor(eval_mode=True))") from None
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has track_running_stats=False and "
                "normalizes with batch statistics even in eval mode, so per-sample gradients are "
                "not defined; use GroupNorm/LayerNorm or track running statistics"
            )
    with torch.no_grad():
        output = model(inputs[:1])
    if not torch.is_tensor(output) or output.shape != targets[:1].shape:
        got = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ValueError(
            f"the measured model ({type(model).__name__}: pl_module.backbone if present, else "
            f"pl_module) maps inputs {tuple(inputs[:1].shape)} to {got}, but targets are "
            f"{tuple(targets[:1].shape)}; the monitor needs a one-step map (B, C_in, H, W) -> "
            "(B, C_out, H, W) matching the targets"
        )
