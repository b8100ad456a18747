r"""Diagonal metrics ``M = diag(d)``: the Euclidean :class:`Identity` and the optimizer's :class:`Adam`.

``M⁻¹ v = v / d`` column-wise, so ``H^g[n, m] = Σ_i b_{n,i} a_{m,i} / d_i`` is an exact sum over
parameter groups (which :func:`~symcoherence.coherence.orbit_influence` exposes as a per-module
breakdown), and a gradient can be scaled by ``d^{-1/2}`` before a random projection
(:func:`projection_scale`).

Example:
    >>> from symcoherence.coherence import Identity
    >>> Identity().diagonal
    True
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from symcoherence.coherence.gradients.fsdp import full_value
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.metrics.base import InfluenceProblem, Metric, Reduction, stream_reduce


class DiagonalMetric(Metric):
    """``M = diag(d)``: ``M⁻¹ v = v / d`` column-wise; subclasses provide ``1/d``."""

    diagonal = True

    @abstractmethod
    def inverse_diagonal(self, fmodel: FunctionalModel) -> torch.Tensor | None:
        """``1/d`` as a ``(P,)`` tensor in the layout of ``fmodel``; ``None`` for ``d = 1``."""

    def reduce(self, problem: InfluenceProblem) -> Reduction:
        """Stream with the diagonal solve; ``bra_self`` is always computed (it is cheap)."""
        inverse = self.inverse_diagonal(problem.fmodel)
        return stream_reduce(
            problem, (lambda v: v) if inverse is None else (lambda v: v * inverse), True
        )


class Identity(DiagonalMetric):
    """Euclidean metric ``M = I``: ``H^g[n, m] = (b_n^g)ᵀ a_m`` (gradient alignment).

    Example:
        >>> Identity().name
        'identity'
    """

    name = "identity"

    def inverse_diagonal(self, fmodel: FunctionalModel) -> None:
        """``M = I`` needs no scaling."""
        return None

    def __repr__(self) -> str:
        return "Identity()"


class Adam(DiagonalMetric):
    r"""The geometry an Adam-type optimizer uses: ``M = diag(sqrt(v̂) + eps)``.

    ``v̂ = v / (1 − β₂^t)`` is the bias-corrected second-moment estimate read from the optimizer's
    ``exp_avg_sq`` state (``max_exp_avg_sq`` with ``amsgrad``), ``t`` the parameter's step count and
    ``β₂``, ``eps`` its parameter group's settings; exactly the denominator of Adam's update.

    Args:
        optimizer: a ``torch.optim.Adam`` / ``AdamW`` (or any optimizer keeping ``exp_avg_sq`` and
            ``step`` per parameter and ``betas``, ``eps`` per group) that has taken at least one
            step and optimizes every selected parameter.

    Raises:
        TypeError: if ``optimizer`` has no ``param_groups``.
        ValueError: (when used) if its state is empty or not Adam-like.
    """

    name = "adam"

    def __init__(self, optimizer: torch.optim.Optimizer):
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "state"):
            raise TypeError(
                "Adam metric needs a torch.optim optimizer (e.g. torch.optim.Adam(model.parameters())), "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer

    def inverse_diagonal(self, fmodel: FunctionalModel) -> torch.Tensor:
        """``1 / (sqrt(v̂) + eps)`` over the selected parameters."""
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        kind = type(self.optimizer).__name__
        pieces = []
        for name, param in fmodel.originals.items():
            group = group_of.get(id(param))
            if group is None:
                raise ValueError(
                    f"parameter {name!r} is not optimized by the given {kind}; pass the optimizer "
                    "that trains the model, or exclude the parameter with parameter_filter"
                )
            state = self.optimizer.state.get(param, {})
            key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
            adam_like = "betas" in group and "eps" in group
            if adam_like and not state:
                raise ValueError(
                    f"{kind} has no state for parameter {name!r}: the adam metric reads the "
                    "second moments of a running optimizer; call optimizer.step() at least once"
                )
            if not adam_like or key not in state or "step" not in state:
                raise ValueError(
                    f"{kind} is not Adam-like: expected per-parameter state {key!r} and 'step' "
                    f"and group settings 'betas' and 'eps', got state keys {sorted(state)} and "
                    f"group keys {sorted(k for k in group if k != 'params')}; use "
                    "metric='identity' or 'gauss_newton' for other optimizers"
                )
            second = full_value(state[key])  # gathered where FSDP2 shards it
            if second.is_complex():  # Adam keeps complex moments per real component
                second = torch.view_as_real(second)
            bias = 1.0 - group["betas"][1] ** float(state["step"])
            pieces.append((1.0 / ((second / bias).sqrt() + group["eps"])).reshape(-1))
        return torch.cat(pieces).to(fmodel.dtype)

    def __repr__(self) -> str:
        return f"Adam({type(self.optimizer).__name__})"


def check_projectable(metric: str | Metric) -> None:
    """Raise ``ValueError`` unless ``metric`` can be evaluated on projected gradients.

    Diagonal metrics (``"identity"``, ``"adam"``, any :class:`DiagonalMetric`) can: the gradients
    are scaled by ``diag(M)^{-1/2}`` before the projection.
    """
    if metric in ("identity", "adam") or isinstance(metric, DiagonalMetric):
        return
    raise ValueError(
        f"metric {metric!r} cannot be evaluated on projected gradients: only diagonal metrics "
        "can, and the Gauss–Newton metric solves with the model's Jacobian (jvp/vjp) in the "
        "full parameter space. Use projection=None (the exact engine) with it, or "
        "metric='identity' or 'adam' with a projection"
    )


def projection_scale(metric: Metric, fmodel: FunctionalModel) -> torch.Tensor | None:
    """``diag(M)^{-1/2}`` ``(P,)`` in ``fmodel``'s layout (``None`` for ``M = I``).

    Gradients are scaled by it before a random projection, so that projected inner products
    estimate ``bᵀ M⁻¹ a``.

    Raises:
        ValueError: if ``metric`` is not diagonal (see :func:`check_projectable`).
    """
    check_projectable(metric)
    inverse = metric.inverse_diagonal(fmodel)
    return None if inverse is None else inverse.sqrt()


__all__ = ["Adam", "DiagonalMetric", "Identity", "check_projectable", "projection_scale"]
