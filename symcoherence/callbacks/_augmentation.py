r"""Probes drawn as training sees them: the training split through the data's own augmentation.

Which probes answer which question:

* ``probe_split="val"`` (untransformed validation pairs): *does learning from data like these
  reach* ``g·x`` *at all?* — a property of the model and of the data distribution. Under
  augmentation it raises false alarms, since training itself sees ``g·x``;
* ``probe_split="train"`` with the training augmentation (``probe_transform="auto"``): *will this
  training run learn* ``g``? — the probes follow the distribution the optimizer sees.

The transform, a function ``(inputs (N, C, H, W), targets, generator) -> (inputs, targets)``, is
found in this order (``probe_transform="auto"``, training split only):

1. the datamodule's hook ``augment(inputs, targets, generator)``, if it defines one;
2. else its ``augment_group`` (a :class:`~symcoherence.groups.Group`, as
   :class:`~symcoherence.data.TrajectoryDataModule` has): each probe pair gets one element drawn
   uniformly from the group, applied to input and target by ``Group.act_pair`` with the measured
   field types — the distribution ``TrajectoryDataModule`` augments its training samples with;
3. else no transform.

It applies to probes from ``probe_batch`` (documented to return unaugmented pairs); probes taken
from a dataset already went through the dataset's ``__getitem__`` and whatever augmentation it
does. The ``generator`` is seeded from ``probe_seed`` and the global RNGs are seeded from it for
the draw (and restored afterwards), so the augmented probe set is the same on every rank and after
resume. ``probe_transform=None`` never transforms; a callable is applied to any split.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> data = type("Data", (), {"augment_group": sc.groups.D4()})()
    >>> transform, described = resolve_transform("auto", data, "train", sc.FieldType(["scalar"]))
    >>> described
    'D4 augmentation (augment_group of the datamodule)'
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> y, _ = transform(x, x, torch.Generator().manual_seed(0))
    >>> sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())
    True
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from symcoherence.callbacks._probes import draw_probe, probe_fingerprint
from symcoherence.groups import FieldType, Group

ProbeTransform = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]
]
_SEED_MIX = 0x9E3779B97F4A7C15 & (2**63 - 1)


def check_transform(setting: Any) -> None:
    """Raise ``TypeError`` unless ``setting`` is ``"auto"``, ``None`` or a callable."""
    if setting is None or setting == "auto" or callable(setting):
        return
    raise TypeError(
        "probe_transform must be 'auto' (the datamodule's augmentation for probe_split='train'), "
        f"None, or a function (inputs, targets, generator) -> (inputs, targets); got {setting!r}"
    )


def resolve_transform(
    setting: Any,
    datamodule: Any,
    split: str,
    field_type: FieldType,
    target_field_type: FieldType | None = None,
) -> tuple[ProbeTransform | None, str | None]:
    """The transform to apply and its description (``(None, None)``: none); see the module."""
    if setting is None:
        return None, None
    if callable(setting):
        return setting, f"probe_transform {getattr(setting, '__name__', type(setting).__name__)}"
    if split != "train":
        return None, None
    hook = getattr(datamodule, "augment", None)
    if callable(hook):
        return hook, "the datamodule's augment()"
    group = getattr(datamodule, "augment_group", None)
    if isinstance(group, Group):
        target = field_type if target_field_type is None else target_field_type

        def augment(
            inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
        ) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = [
                group.act_pair(element, x, y, field_type, target)
                for element, x, y in zip(
                    group.sample(len(inputs), generator), inputs, targets, strict=True
                )
            ]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

        return augment, f"{group.name} augmentation (augment_group of the datamodule)"
    return None, None


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, numpy's and Python's from ``seed``; restore them afterwards."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())  # noqa: NPY002
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - what a dataset's own augmentation may read
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        random.setstate(states[2])


def draw_probes(
    datamodule: Any,
    pl_module: torch.nn.Module,
    size: int,
    split: str,
    seed: int,
    *,
    field_type: FieldType,
    target_field_type: FieldType | None = None,
    transform: Any = "auto",
    trainer: Any = None,
    batch_items: Any = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Draw the probe set (:func:`~symcoherence.callbacks._probes.draw_probe`) and transform it.

    The global RNGs are seeded from ``seed`` for the draw; the transform is the module
    docstring's.

    Returns:
        ``(inputs, targets, identity)``; ``identity`` names the transform (``"transform"``) and its
        SHA-256 is that of the transformed tensors.
    """
    with seeded_global_rng(seed):
        inputs, targets, identity = draw_probe(
            datamodule, pl_module, size, split, seed, trainer=trainer, batch_items=batch_items
        )
    if identity.get("source") != "probe_batch" and not callable(transform):
        return inputs, targets, identity
    function, described = resolve_transform(
        transform, datamodule, split, field_type, target_field_type
    )
    if function is None:
        return inputs, targets, identity
    generator = torch.Generator().manual_seed(seed ^ _SEED_MIX)
    with torch.no_grad():
        pair = function(inputs, targets, generator)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise TypeError(
            f"{described} must return an (inputs, targets) pair, got {type(pair).__name__}"
        )
    new_inputs, new_targets = pair
    if new_inputs.shape != inputs.shape or new_targets.shape != targets.shape:
        raise ValueError(
            f"{described} changed the probe shapes from {tuple(inputs.shape)}, "
            f"{tuple(targets.shape)} to {tuple(new_inputs.shape)}, {tuple(new_targets.shape)}; "
            "an augmentation must keep them"
        )
    new_inputs, new_targets = new_inputs.to(inputs), new_targets.to(targets)
    identity.update(transform=described, sha256=probe_fingerprint(new_inputs, new_targets))
    return new_inputs, new_targets, identity


__all__ = ["ProbeTransform", "check_transform", "draw_probes", "resolve_transform"]
