r"""Forward equivariance checks: does ``f(g·x) = g·f(x)`` hold for every element?

The relative defect of element ``g`` on inputs ``x`` is

.. math:: \delta(g) = \frac{\lVert f(g·x) - g·f(x) \rVert}{\lVert f(x) \rVert}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from symcoherence.groups import FieldType, Group


def equivariance_defect(
    model: Callable[[torch.Tensor], torch.Tensor],
    group: Group,
    field_type: FieldType,
    target_field_type: FieldType | None = None,
    inputs: torch.Tensor | None = None,
    elements: Sequence[str] | None = None,
    grid: int | tuple[int, int] = 16,
    batch: int = 2,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Relative defect ``‖f(g·x) − g·f(x)‖ / ‖f(x)‖`` per element.

    Args:
        model: maps ``(B, C_in, H, W)`` to ``(B, C_out, H, W)``.
        group: the group whose elements are checked.
        field_type: field type of the input channels.
        target_field_type: field type of the output channels (default ``field_type``).
        inputs: ``(B, C_in, H, W)``; random normal inputs of size ``grid`` when omitted.
        elements: element names to check (default: all).
        grid: grid size of the random inputs.
        batch: batch size of the random inputs.
        generator: RNG for the random inputs (default: seeded with 0, the global RNG is untouched).

    Returns:
        ``{element: defect}``.
    """
    target_field_type = field_type if target_field_type is None else target_field_type
    if inputs is None:
        height, width = (grid, grid) if isinstance(grid, int) else grid
        generator = generator or torch.Generator().manual_seed(0)
        parameter = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        device = parameter.device if parameter is not None else torch.device("cpu")
        inputs = torch.randn(batch, field_type.num_channels, height, width, generator=generator)
        inputs = inputs.to(device=device, dtype=dtype)
    field_type.check(inputs, "inputs")
    with torch.no_grad():
        reference = model(inputs)
        target_field_type.check(reference, "model output")
        scale = reference.norm().clamp_min(torch.finfo(reference.dtype).tiny)
        defects = {}
        for element in group.elements if elements is None else elements:
            moved = model(group.act(element, inputs, field_type))
            expected = group.act(element, reference, target_field_type)
            defects[element] = float((moved - expected).norm() / scale)
    return defects


def assert_equivariant(
    model: Callable[[torch.Tensor], torch.Tensor],
    group: Group,
    field_type: FieldType,
    target_field_type: FieldType | None = None,
    inputs: torch.Tensor | None = None,
    elements: Sequence[str] | None = None,
    rtol: float = 1e-5,
    **kwargs,
) -> None:
    """Raise ``AssertionError`` naming every element whose relative defect exceeds ``rtol``.

    Arguments as in :func:`equivariance_defect`; ``rtol`` defaults to the fp32 tolerance.
    """
    defects = equivariance_defect(
        model, group, field_type, target_field_type, inputs, elements, **kwargs
    )
    failing = {name: value for name, value in defects.items() if not value <= rtol}
    if failing:
        detail = ", ".join(f"{name}: {value:.2e}" for name, value in failing.items())
        raise AssertionError(
            f"model is not equivariant under {group.name} to rtol={rtol:g}; relative defect "
            f"‖f(g·x) − g·f(x)‖/‖f(x)‖ per failing element: {detail}"
        )
