r"""The orbit-influence engine: streaming per-sample gradients along group orbits.

For probes ``(x_n, y_n)``, elements ``g_1..g_K`` (``g_1 = e``), a per-sample cost
``C(θ; x, y) = loss(f_θ(x), y)`` and a metric ``M`` on parameter space:

.. math::

    a_m = ∇_θ C(θ; x_m, y_m), \qquad b_n^g = ∇_θ C(θ; g·x_n, g·y_n), \qquad
    H^g[n, m] = (b_n^g)^T M^{-1} a_m .

The ket gradients are computed once; bra gradients are computed element by element and chunk by
chunk and immediately reduced against ``M⁻¹ a``, so memory holds ``N·P`` numbers for the kets plus
one chunk of bras, never ``K·N·P``. The identity element's bras are the kets themselves.

Sign: ``H^g[n, m] > 0`` means a (natural-)gradient step ``δθ = −ε M⁻¹ a_m`` on ``x_m`` lowers the
loss at ``g·x_n`` (by ``ε H^g[n, m]`` to first order).

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    >>> shifts = sc.groups.Shifts(line=("x", [1, 2]))
    >>> result = sc.orbit_influence(net, sc.smse, x, y, shifts, sc.FieldType(["scalar"]))
    >>> result.matrix.shape
    torch.Size([3, 6, 6])
    >>> [round(r, 6) for r in result.ratio.tolist()]   # circular convolution: exactly equivariant
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from symcoherence.coherence.gradients.chunking import ChunkSize
from symcoherence.coherence.gradients.fsdp import is_sharded
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.memory import DEFAULT_MEMORY_FRACTION, MemoryLimit
from symcoherence.coherence.gradients.parameters import (
    LossFn,
    ParameterFilter,
    Randomness,
    check_modes,
    check_pair,
    grad_mode,
    plain,
)
from symcoherence.coherence.gradients.projection import ProjectedGradients, Projection
from symcoherence.coherence.gradients.rows import GradientRows
from symcoherence.coherence.metrics.base import InfluenceProblem, Metric
from symcoherence.coherence.metrics.diagonal import Identity, projection_scale
from symcoherence.coherence.result import OrbitInfluence
from symcoherence.coherence.spec import resolve_metric
from symcoherence.coherence.statistics.normalization import check_normalization
from symcoherence.groups import FieldType, Group


def resolve_elements(group: Group, elements: Sequence[str] | None) -> tuple[str, ...]:
    """``elements`` (default: all of ``group``), checked to be distinct members, non-empty."""
    if not isinstance(group, Group):
        raise TypeError(
            f"group must be a symcoherence Group (e.g. D4()), got {type(group).__name__}"
        )
    if isinstance(elements, str):
        raise TypeError(f"elements must be a list of names, got the string {elements!r}")
    names = group.elements if elements is None else tuple(elements)
    if not names:
        raise ValueError(f"the element list is empty; pass some of {list(group.elements)}")
    if len(set(names)) != len(names):
        raise ValueError(f"elements must be distinct, got {list(names)}")
    for name in names:
        group.check_element(name)
    return names


def check_fields(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    field_type: FieldType,
    target_field_type: FieldType | None,
) -> FieldType:
    """Check batched ``(N, C, H, W)`` fields against their types; return the target type."""
    target_field_type = field_type if target_field_type is None else target_field_type
    for kind, value, name in (
        (field_type, inputs, "inputs"),
        (target_field_type, targets, "targets"),
    ):
        if not isinstance(kind, FieldType):
            raise TypeError(f"field types must be FieldType objects, got {type(kind).__name__}")
        if isinstance(value, torch.Tensor) and value.dim() < 4:
            raise ValueError(
                f"{name} must be a batch of fields (N, C, H, W), got shape {tuple(value.shape)}; "
                "for a single sample pass x[None]"
            )
        kind.check(value, name)
    check_pair(inputs, targets)
    return target_field_type


def module_columns(fmodel: FunctionalModel | ProjectedGradients) -> dict[str, torch.Tensor]:
    """Flat-parameter columns of each module (``"(root)"`` for parameters of the model itself)."""
    grouped: dict[str, list[torch.Tensor]] = {}
    for name in fmodel.layout.names:
        module = name.rsplit(".", 1)[0] if "." in name else "(root)"
        part = fmodel.layout.slices[name]
        grouped.setdefault(module, []).append(
            torch.arange(part.start, part.stop, device=fmodel.device)
        )
    return {module: torch.cat(parts) for module, parts in grouped.items()}


def orbit_influence(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    group: Group,
    field_type: FieldType,
    *,
    target_field_type: FieldType | None = None,
    elements: Sequence[str] | None = None,
    metric: str | Metric = "identity",
    normalization: str = "standard",
    chunk_size: ChunkSize = "auto",
    parameter_filter: ParameterFilter = None,
    optimizer: torch.optim.Optimizer | None = None,
    breakdown: bool = False,
    randomness: Randomness = "error",
    projection: Projection | None = None,
    max_memory: MemoryLimit = DEFAULT_MEMORY_FRACTION,
) -> OrbitInfluence:
    r"""Orbit influence ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m`` for every element ``g`` (see module docs).

    Args:
        model: maps ``(B, C, H, W)`` inputs to predictions shaped like the targets.
        loss_fn: per-sample loss on unbatched tensors (default choice:
            :func:`~symcoherence.coherence.smse`).
        inputs: probe states ``(N, C, H, W)``, typed by ``field_type``.
        targets: next states ``(N, C', H, W)``, typed by ``target_field_type``.
        group: the symmetry group; pairs are moved with ``group.act_pair``.
        field_type: field type of the inputs.
        target_field_type: field type of the targets (default ``field_type``).
        elements: element names (default: all of ``group``, identity first).
        metric: ``"identity"``, ``"adam"``, ``"gauss_newton"`` or a
            :class:`~symcoherence.coherence.Metric`.
        normalization: ``"standard"``, ``"cosine"`` or ``"none"`` (stored on the result; the raw
            matrix does not depend on it).
        chunk_size: samples per batched gradient call (see
            :func:`~symcoherence.coherence.per_sample_grads`).
        parameter_filter: which parameters span ``θ`` (``None``: all trainable).
        optimizer: the optimizer whose state ``metric="adam"`` reads.
        breakdown: also return ``by_module`` raw matrices (diagonal metrics only) that sum to
            ``matrix``: which modules carry, and which break, the coupling along the orbit.
        randomness: dropout handling, as in ``per_sample_grads``.
        projection: a :class:`~symcoherence.coherence.Projection` to measure on seeded random
            projections of the gradients, ``H ≈ (S M^{-1/2} b)ᵀ (S M^{-1/2} a)`` (exact in
            expectation, memory ``O(N·d + model)``; diagonal metrics only), or ``None`` (exact).
        max_memory: memory budget of the gradient chunks, in bytes (an int) or as a fraction of
            the device's free memory (a float in (0, 1]); ``info`` records it in bytes
            (``memory_budget``) with the largest chunk taken (``chunk_size``).

    Returns:
        :class:`~symcoherence.coherence.OrbitInfluence` with ``matrix`` ``(K, N, N)``.

    Raises:
        ValueError: on shape / field-type mismatch, an empty or unknown element list, an unknown
            metric or normalization, ``N < 2`` with ``standard``, ``breakdown`` with a
            non-diagonal metric, or a model in a mode that makes gradients ill-defined; a
            projection with a non-diagonal metric.
    """
    target_field_type = check_fields(inputs, targets, field_type, target_field_type)
    names = resolve_elements(group, elements)
    check_normalization(normalization, inputs.shape[0])
    metric = resolve_metric(metric, optimizer)
    if breakdown and not metric.diagonal:
        raise ValueError(
            f"breakdown=True splits H exactly over parameter groups only for diagonal metrics "
            f"('identity', 'adam'), got {metric!r}"
        )
    check_modes(model, randomness)
    if projection is None and is_sharded(model):
        raise ValueError(
            "the model is sharded with FSDP2 (its parameters are DTensors), and exact per-sample "
            "gradients would need every parameter on every rank: measure it through a "
            "projection (projection=Projection(...), computed on the sharded layers; a dim of "
            "at least the parameter count keeps it exact), or measure a gathered copy"
        )
    with grad_mode():
        fmodel = FunctionalModel(model, parameter_filter, max_memory=max_memory)
        # projected gradients carry the metric's diagonal, so they meet under the identity
        source = (
            fmodel
            if projection is None
            else projection.bind(model, fmodel, projection_scale(metric, fmodel))
        )
        reducer = metric if projection is None else Identity()
        inputs, targets = plain(inputs), plain(targets)
        probes = source.flat_grad_matrix(loss_fn, inputs, targets, chunk_size, randomness)
        check_gradients(probes.rows)
        problem, bra_norm, bra_loss = _orbit_problem(
            fmodel,
            source,
            probes,
            group,
            names,
            (inputs, targets, field_type, target_field_type),
            lambda *pair: source.flat_grads(loss_fn, *pair, chunk_size, randomness),
            need_bra_self=normalization == "cosine",
            breakdown=breakdown,
        )
        reduced = reducer.reduce(problem)
        if projection is not None:
            reduced.info.update(projection_dim=source.layout.size, projection_seed=projection.seed)
        reduced.info.update(memory_budget=fmodel.memory_budget, chunk_size=source.largest_chunk)
    result = OrbitInfluence(
        matrix=reduced.matrix.detach(),
        bra_self=reduced.bra_self.detach(),
        ket_self=reduced.ket_self.detach(),
        elements=names,
        group_name=group.name,
        normalization=normalization,
        identity=group.identity,
        metric=metric.name,
        info=reduced.info,
        by_module=reduced.by_module,
        bra_norm=bra_norm.detach(),
        equivariance=bra_loss / probes.losses,
    )
    _warn_if_degenerate(result)
    return result


def _orbit_problem(
    fmodel: FunctionalModel,
    source: FunctionalModel | ProjectedGradients,
    probes: GradientRows,
    group: Group,
    names: tuple[str, ...],
    pair: tuple[torch.Tensor, torch.Tensor, FieldType, FieldType],
    gradients: Callable[[torch.Tensor, torch.Tensor], Iterator[GradientRows]],
    *,
    need_bra_self: bool,
    breakdown: bool,
) -> tuple[InfluenceProblem, torch.Tensor, torch.Tensor]:
    """The kets, the stream of bra blocks ``b_n^g`` and the orbit batch, for a metric to reduce.

    Also returns the ``(K, N)`` bra norms ``‖b_n^g‖`` and losses, filled as the bras stream by
    (NaN where a bra was never computed).

    Args:
        fmodel: the functional model (parameters, layout, forward).
        source: where gradient rows come from (``fmodel`` itself, or its projection).
        probes: the kets ``a_m`` with their norms and losses.
        group: the group; ``names`` the measured elements.
        names: the measured elements, in order.
        pair: ``(inputs, targets, field_type, target_field_type)`` of the probes.
        gradients: ``(inputs, targets) -> chunks of GradientRows`` of a moved probe set.
        need_bra_self: whether the metric must compute ``(b_n^g)ᵀ M⁻¹ b_n^g``.
        breakdown: also group the columns by module.
    """
    inputs, targets, field_type, target_field_type = pair
    bra_norm = probes.rows.new_full((len(names), inputs.shape[0]), float("nan"))
    bra_loss = bra_norm.clone()

    def bra_blocks() -> Iterator[tuple[int, slice, torch.Tensor]]:
        for index, element in enumerate(names):
            if element == group.identity:
                bra_norm[index], bra_loss[index] = probes.norms, probes.losses
                yield index, probes.samples, probes.rows
                continue
            moved = group.act_pair(element, inputs, targets, field_type, target_field_type)
            for samples, block, norms, losses in gradients(*moved):
                bra_norm[index, samples], bra_loss[index, samples] = norms, losses
                yield index, samples, block

    def orbit_inputs() -> Iterator[torch.Tensor]:
        for element in names:
            yield group.act(element, inputs, field_type)

    problem = InfluenceProblem(
        fmodel=fmodel,
        ket_inputs=inputs,
        kets=probes.rows,
        bra_blocks=bra_blocks,
        num_elements=len(names),
        need_bra_self=need_bra_self,
        groups=module_columns(source) if breakdown else None,
        orbit_inputs=orbit_inputs,
    )
    return problem, bra_norm, bra_loss


def _warn_if_degenerate(result: OrbitInfluence) -> None:
    """Say how many influence rows are degenerate (skipped by every summary), if any."""
    if result.degenerate_rows and bool(torch.isfinite(result.matrix).all()):
        total = result.matrix.shape[0] * result.matrix.shape[1]
        warnings.warn(
            f"{result.degenerate_rows} of {total} influence rows are "
            f"degenerate ({result.zero_gradients} bras with zero gradient, the rest without "
            "spread over the probes): they are skipped by every summary and counted in "
            "measurement/.../degenerate_rows. Likely causes: probes the model fits exactly, or "
            "parameters that barely enter the forward pass; use more or other probes or a "
            "parameter_filter",
            RuntimeWarning,
            stacklevel=3,
        )


def check_gradients(kets: torch.Tensor) -> None:
    """Raise ``ValueError`` when the probes' per-sample gradients are non-finite or all zero.

    Nothing can be measured then, and summaries would report zeros or NaN as if they were results.
    """
    if not bool(torch.isfinite(torch.stack(kets.aminmax())).all()):  # NaN propagates; no N×P copy
        raise ValueError(
            "the per-sample loss gradients of the probes hold non-finite values (NaN or Inf); "
            "check the loss on the probe set (a loss that divides by a vanishing target norm, or "
            "diverged parameters)"
        )
    if not bool(kets.count_nonzero()):
        raise ValueError(
            f"every per-sample loss gradient of the {kets.shape[0]} probes is exactly zero, so "
            "there is no influence to measure. Likely causes: the selected parameters do not enter "
            "the forward pass (layers that cache their weights in eval mode: measure with "
            "eval_mode=False, or exclude them with a parameter_filter), or the loss is constant "
            "on the probes"
        )


__all__ = [
    "check_fields",
    "check_gradients",
    "module_columns",
    "orbit_influence",
    "resolve_elements",
]
