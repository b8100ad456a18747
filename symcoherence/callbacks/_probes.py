"""Probe set, model and loss of :class:`~symcoherence.callbacks.OrbitCoherenceMonitor`.

Finds the model and loss to differentiate, draws the fixed, seeded probe set (from the datamodule's
``probe_batch`` or its dataloaders' datasets) and checks field types, group, model modes and model
output against the data before the first measurement.

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
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from symcoherence.coherence import LossFn, MeasurementSpec, smse
from symcoherence.coherence.gradients.parameters import check_modes

SPLITS = ("train", "val", "test")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


def declared_defaults(datamodule: Any) -> dict[str, Any]:
    """What the data declare for a measurement: group and field types (``None`` where absent).

    The group is the datamodule's ``diagnostic_group`` (the small group the monitor measures by
    default), else its ``symmetry_group``.
    """
    group = getattr(datamodule, "diagnostic_group", None)
    if group is None:
        group = getattr(datamodule, "symmetry_group", None)
    return {
        "group": group,
        "field_type": getattr(datamodule, "field_type", None),
        "target_field_type": getattr(datamodule, "target_field_type", None),
    }


BatchItems = tuple[Any, Any] | Callable[[Any], tuple[torch.Tensor, torch.Tensor]]


def check_batch_items(batch_items: Any) -> None:
    """Raise ``TypeError`` unless ``batch_items`` is a pair of keys/indices or a callable."""
    if callable(batch_items):
        return
    if not isinstance(batch_items, (tuple, list)) or len(batch_items) != 2:
        raise TypeError(
            "batch_items says which items of a dataset sample are (input, target): a pair of "
            "keys or indices such as ('x', 'y') or (0, 1), or a function sample -> (x, y); got "
            f"{batch_items!r}"
        )


def split_item(item: Any, batch_items: BatchItems) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` of one dataset sample (a tuple, list or dict; see ``batch_items``)."""
    if callable(batch_items):
        pair = batch_items(item)
    else:
        try:
            pair = (item[batch_items[0]], item[batch_items[1]])
        except (KeyError, IndexError, TypeError) as error:
            available = (
                list(item)
                if isinstance(item, dict)
                else f"{len(item)} items"
                if isinstance(item, (tuple, list))
                else type(item).__name__
            )
            raise TypeError(
                f"cannot take (input, target) = items {tuple(batch_items)} of a dataset sample "
                f"({available}): {error!r}; pass batch_items=(input key, target key) or a "
                "function sample -> (input, target) to OrbitCoherenceMonitor"
            ) from None
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise TypeError(f"batch_items must give an (input, target) pair, got {type(pair).__name__}")
    return torch.as_tensor(pair[0]), torch.as_tensor(pair[1])


def draw_probe(
    datamodule: Any,
    pl_module: nn.Module,
    size: int,
    split: str,
    seed: int,
    *,
    trainer: Any = None,
    batch_items: BatchItems = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Draw the fixed probe set ``(inputs (N, C, H, W), targets, identity)``.

    From ``datamodule.probe_batch(size, split=split, seed=seed)`` when the datamodule has it;
    otherwise ``size`` distinct items of the ``{split}`` dataset — of the datamodule's or the
    module's ``{split}_dataloader()``, else of the dataloaders given to ``trainer.fit`` — chosen by
    a generator seeded with ``seed`` (the global RNG is not used); ``batch_items`` picks input and
    target out of each sample. ``identity`` records the source, split, seed, size, the indices
    (dataset draw) and a SHA-256 of the tensors.
    """
    identity: dict[str, Any] = {"split": split, "seed": seed, "size": size}
    if callable(getattr(datamodule, "probe_batch", None)):
        inputs, targets = datamodule.probe_batch(size, split=split, seed=seed)
        identity["source"] = "probe_batch"
    else:
        dataset, origin = _dataset(datamodule, pl_module, split, trainer)
        if len(dataset) < size:
            raise ValueError(
                f"the {split} dataset has {len(dataset)} samples but probe_size={size}; lower "
                f"probe_size or provide more {split} data"
            )
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        indices = sorted(order[:size].tolist())
        pairs = [split_item(dataset[i], batch_items) for i in indices]
        inputs = torch.stack([p[0] for p in pairs])
        targets = torch.stack([p[1] for p in pairs])
        identity.update(source=origin, indices=indices)
    if inputs.shape[0] != size or targets.shape[0] != size:
        raise ValueError(
            f"expected {size} probe pairs, got inputs {tuple(inputs.shape)} and targets "
            f"{tuple(targets.shape)}"
        )
    identity["sha256"] = probe_fingerprint(inputs, targets)
    dtype = compute_dtype(pl_module)
    device = next(iter(pl_module.parameters())).device
    return inputs.to(device, dtype), targets.to(device, dtype), identity


def _trainer_loaders(trainer: Any, split: str) -> Any:
    """The dataloader(s) of ``split`` that were passed to ``trainer.fit`` (loaded if need be)."""
    if split == "train":
        return trainer.train_dataloader
    if split == "val":
        if trainer.val_dataloaders is None:
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
        return trainer.val_dataloaders
    return trainer.test_dataloaders


def _dataset(datamodule: Any, pl_module: nn.Module, split: str, trainer: Any) -> tuple[Any, str]:
    """The map-style dataset of ``split`` and a description of where it came from."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    hook = f"{split}_dataloader"
    loader, origin = None, f"{split}_dataloader"
    for source in (datamodule, pl_module):
        if source is not None and is_overridden(hook, source):
            loader = getattr(source, hook)()
            break
    else:
        if trainer is not None:
            loader, origin = _trainer_loaders(trainer, split), f"trainer {split} dataloader"
    if loader is None:
        where = type(datamodule if datamodule is not None else pl_module).__name__
        raise ValueError(
            f"no probe data: {where} has neither probe_batch(n, split, seed) nor {hook}(), and "
            f"the trainer was given no {split} dataloader; add one of them or choose another "
            f"probe_split ({list(SPLITS)})"
        )
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    elif isinstance(loader, dict):
        loader = next(iter(loader.values()))
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            f"the {split} dataloader must be a DataLoader over a map-style dataset to draw probes "
            f"from, got {type(loader).__name__}; give the datamodule a probe_batch(n, split, seed) "
            "method"
        )
    return dataset, origin


def check_configuration(
    spec: MeasurementSpec, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> None:
    """Raise a ``ValueError`` naming the fix unless data, group and model fit together.

    Checks: the probe tensors match the field types; every element acts on the grid; no layer
    normalizes with batch statistics or draws dropout masks in the mode the model is measured in;
    the model maps one probe input to the shape of one target.
    """
    group, elements = spec.group, spec.measured_elements
    field_type, target_field_type = spec.field_type, spec.output_field_type
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
