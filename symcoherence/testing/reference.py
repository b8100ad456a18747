r"""A slow, obviously correct orbit influence: Python loops of ``torch.autograd.grad``, dense metrics.

Every per-sample gradient is one ``torch.autograd.grad`` call on the model as it is (no
``torch.func``); the metric is a dense ``P × P`` matrix: ``I``, ``diag(sqrt(v̂) + eps)`` from the
optimizer state, or the Gauss–Newton ``χ = (1/K) Σ_k s J_kᵀJ_k + λI`` with each ``J_k`` (``F × P``)
assembled row by row (one batch ``k`` for ``batch="probes"``, one per measured element for
``batch="orbit"``) and inverted with ``torch.linalg.inv``. A relative damping uses the exact
``tr(η)`` where the fast path uses a seeded estimate, so the two agree only up to that estimate's
error; compare at an absolute ``damping=`` (or the fast result's ``info["damping"]``) for exact
agreement. For ``GaussNewton(solver="subspace")`` the reference is the dense Galerkin inverse
``Q (Qᵀ χ Q)⁻¹ Qᵀ`` on the span of the stacked gradients, which the fast solver must reproduce.
Only for tiny models (``P`` up to a few thousand).

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.testing import reference_orbit_influence
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(3, 1, 6, 6), torch.randn(3, 1, 6, 6)
    >>> group, scalar = sc.groups.C4(), sc.FieldType(["scalar"])
    >>> slow = reference_orbit_influence(net, sc.smse, x, y, group, scalar)
    >>> fast = sc.orbit_influence(net, sc.smse, x, y, group, scalar)
    >>> bool(torch.allclose(slow.matrix, fast.matrix, rtol=1e-4, atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from symcoherence.coherence import Adam, GaussNewton, Identity, Metric, OrbitInfluence
from symcoherence.coherence.gradients.parameters import ParameterFilter, select_parameters
from symcoherence.coherence.influence import check_fields, resolve_elements, resolve_metric
from symcoherence.groups import FieldType, Group


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [(torch.view_as_real(t) if t.is_complex() else t).reshape(-1) for t in tensors]
    )


def reference_grads(model, loss_fn, inputs, targets, params: list[nn.Parameter]) -> torch.Tensor:
    """``(N, P)``: one ``torch.autograd.grad`` call per sample."""
    rows = []
    with torch.enable_grad():
        for x, y in zip(inputs, targets, strict=True):
            loss = loss_fn(model(x.unsqueeze(0)).squeeze(0), y)
            rows.append(_flat(torch.autograd.grad(loss, params)))
    return torch.stack(rows)


def reference_jacobian(model, inputs, params: list[nn.Parameter]) -> torch.Tensor:
    """Dense ``J`` ``(F, P)`` of the batched outputs, one ``autograd.grad`` call per output."""
    with torch.enable_grad():
        outputs = model(inputs).reshape(-1)
        return torch.stack(
            [_flat(torch.autograd.grad(out, params, retain_graph=True)) for out in outputs]
        )


def _adam_diagonal(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.Tensor:
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    pieces = []
    for p in params:
        group, state = groups[id(p)], optimizer.state[p]
        v = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        v = torch.view_as_real(v) if v.is_complex() else v
        v_hat = v / (1 - group["betas"][1] ** float(state["step"]))
        pieces.append(v_hat.sqrt() + group["eps"])
    return _flat(pieces)


def dense_gauss_newton(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    params: list[nn.Parameter],
    output_scale: float | None = None,
) -> torch.Tensor:
    r"""Dense ``η = (1/K) Σ_k s_k J_kᵀ J_k`` ``(P, P)`` over ``K`` input batches.

    ``J_k`` is the Jacobian of batch ``k``'s outputs (:func:`reference_jacobian`) and ``s_k`` is
    ``output_scale``, or ``1/F_k`` (``F_k`` scalar outputs of batch ``k``) when it is ``None``.
    """
    total = 0
    for inputs in batches:
        jac = reference_jacobian(model, inputs, params)
        scale = output_scale if output_scale is not None else 1.0 / jac.shape[0]
        total = total + scale * jac.T @ jac
    return total / len(batches)


def dense_inverse_metric(
    metric: Metric,
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    params: list[nn.Parameter],
    gradients: torch.Tensor,
) -> torch.Tensor:
    """Dense ``M⁻¹`` ``(P, P)`` (for the subspace solver: the Galerkin ``Q (QᵀχQ)⁻¹ Qᵀ``).

    ``batches`` are the input batches of the Gauss–Newton ``η`` (see :func:`dense_gauss_newton`);
    a relative damping ``α`` gives ``λ = α·tr(η)/P`` with the exact trace.
    """
    size = gradients.shape[-1]
    eye = torch.eye(size, dtype=gradients.dtype)
    if isinstance(metric, Identity):
        return eye
    if isinstance(metric, Adam):
        return torch.diag(1.0 / _adam_diagonal(metric.optimizer, params).to(gradients.dtype))
    if not isinstance(metric, GaussNewton):
        raise TypeError(f"the reference knows Identity, Adam and GaussNewton, got {metric!r}")
    eta = dense_gauss_newton(model, batches, params, metric.output_scale)
    damping = metric.damping
    if metric.relative_damping is not None:
        damping = metric.relative_damping * float(eta.trace()) / size
    chi = eta + damping * eye
    if metric.solver == "cg":
        return torch.linalg.inv(chi)
    _, sigma, right = torch.linalg.svd(gradients, full_matrices=False)
    keep = (sigma.pow(2) >= metric.energy_cutoff * sigma[0].pow(2)) & (sigma > 0)
    basis = right[keep].T  # Q (P, r)
    return basis @ torch.linalg.inv(basis.T @ chi @ basis) @ basis.T


def reference_orbit_influence(
    model: nn.Module,
    loss_fn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    group: Group,
    field_type: FieldType,
    target_field_type: FieldType | None = None,
    elements: Sequence[str] | None = None,
    metric: str | Metric = "identity",
    normalization: str = "standard",
    parameter_filter: ParameterFilter = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> OrbitInfluence:
    r"""``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m`` with loops and a dense ``M⁻¹`` (arguments as ``orbit_influence``).

    Returns:
        :class:`~symcoherence.coherence.OrbitInfluence` with ``info["reference"] = True``.
    """
    target_field_type = check_fields(inputs, targets, field_type, target_field_type)
    names = resolve_elements(group, elements)
    metric = resolve_metric(metric, optimizer)
    params = list(select_parameters(model, parameter_filter).values())
    kets = reference_grads(model, loss_fn, inputs, targets, params)
    bras = torch.stack(
        [
            reference_grads(
                model,
                loss_fn,
                *group.act_pair(name, inputs, targets, field_type, target_field_type),
                params,
            )
            for name in names
        ]
    )
    everything = torch.cat([kets, bras.reshape(-1, kets.shape[-1])])
    batches = [inputs]
    if isinstance(metric, GaussNewton) and metric.batch == "orbit":
        batches = [group.act(name, inputs, field_type) for name in names]
    inverse = dense_inverse_metric(metric, model, batches, params, everything)
    matrix = torch.einsum("knp,pq,mq->knm", bras, inverse, kets)
    bra_self = torch.einsum("knp,pq,knq->kn", bras, inverse, bras)
    ket_self = torch.einsum("mp,pq,mq->m", kets, inverse, kets)
    return OrbitInfluence(
        matrix.detach(),
        bra_self.detach(),
        ket_self.detach(),
        names,
        group.name,
        normalization,
        identity=group.identity,
        metric=metric.name,
        info={"reference": True},
    )


__all__ = [
    "dense_gauss_newton",
    "dense_inverse_metric",
    "reference_grads",
    "reference_jacobian",
    "reference_orbit_influence",
]
