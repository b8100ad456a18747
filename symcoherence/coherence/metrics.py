r"""Metrics ``M`` on parameter space and the streaming reduction to ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m``.

A metric turns ket gradients ``a_m`` (``N × P``) and a stream of bra-gradient blocks ``b_n^g``
(computed element by element, chunk by chunk) into

* ``matrix[k, n, m] = (b_n^{g_k})ᵀ M⁻¹ a_m``  ``(K, N, N)``,
* ``bra_self[k, n] = (b_n^{g_k})ᵀ M⁻¹ b_n^{g_k}``  ``(K, N)``,
* ``ket_self[m] = a_mᵀ M⁻¹ a_m``  ``(N,)``.

Solve-type metrics store ``M⁻¹ a`` (``N × P``) once and reduce each bra block against it, so memory
never holds ``K·N·P`` numbers. Diagonal metrics (:class:`Identity`, :class:`Adam`) make ``H`` an
exact sum over parameter groups, which :func:`~symcoherence.coherence.orbit_influence` exposes as a
per-module breakdown.

Example:
    >>> from symcoherence.coherence import Identity
    >>> Identity().diagonal
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from symcoherence.coherence.per_sample import FunctionalModel

BraBlocks = Callable[[], Iterator[tuple[int, slice, torch.Tensor]]]


@dataclass
class InfluenceProblem:
    """Everything a metric needs to reduce gradients to influence matrices.

    Attributes:
        fmodel: the functional model (parameters, layout, forward).
        ket_inputs: untransformed probe inputs ``(N, C, H, W)`` (the Gauss–Newton metric's batch).
        kets: ket gradients ``a`` ``(N, P)``.
        bra_blocks: callable returning an iterator of ``(element_index, samples, (c, P) block)``;
            each call recomputes the stream.
        num_elements: ``K``.
        need_bra_self: whether ``bra_self`` is needed (expensive only for the ``cg`` solver).
        groups: for a per-module breakdown, ``{label: column index tensor}``; else ``None``.
        orbit_inputs: callable returning an iterator over the measured elements' transformed
            probe inputs ``g·x`` ``(N, C, H, W)``, in element order (identity included); metrics
            built on the whole orbit batch read it.
    """

    fmodel: FunctionalModel
    ket_inputs: torch.Tensor
    kets: torch.Tensor
    bra_blocks: BraBlocks
    num_elements: int
    need_bra_self: bool = True
    groups: dict[str, torch.Tensor] | None = None
    orbit_inputs: Callable[[], Iterator[torch.Tensor]] | None = None


@dataclass
class Reduction:
    """Raw influence quantities (see the module docstring) and solver diagnostics."""

    matrix: torch.Tensor
    bra_self: torch.Tensor
    ket_self: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    by_module: dict[str, torch.Tensor] | None = None


def row_dots(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``(c,)`` dot products of matching rows of two ``(c, P)`` matrices.

    One ``dot`` per row: no ``(c, P)`` temporary (as ``(left * right).sum(-1)`` or ``vecdot``
    make) and, on a CPU, several times faster than the batched ``einsum`` / ``bmm``.
    """
    return torch.stack([a.dot(b) for a, b in zip(left, right, strict=True)])


def stream_reduce(
    problem: InfluenceProblem,
    solve: Callable[[torch.Tensor], torch.Tensor],
    bra_self: bool,
) -> Reduction:
    """Reduce with a linear ``solve(v) = M⁻¹ v`` applied to ``(c, P)`` row blocks.

    ``M⁻¹ a`` is computed once; each bra block meets it in a ``(c, N)`` product. ``bra_self`` is
    computed when asked (else NaN). With ``problem.groups`` the products are also split by column
    groups, which is exact when ``solve`` acts column-wise (a diagonal metric).
    """
    kets = problem.kets
    num, k = kets.shape[0], problem.num_elements
    solved = solve(kets)
    ket_self = row_dots(kets, solved)
    matrix = kets.new_zeros(k, num, num)
    bras = kets.new_full((k, num), float("nan"))
    by_module = None
    if problem.groups is not None:
        by_module = {label: kets.new_zeros(k, num, num) for label in problem.groups}
    for index, samples, block in problem.bra_blocks():
        matrix[index, samples] = block @ solved.T
        if bra_self:
            bras[index, samples] = row_dots(block, solve(block))
        if by_module is not None:
            for label, columns in problem.groups.items():
                by_module[label][index, samples] = block[:, columns] @ solved[:, columns].T
    return Reduction(matrix, bras, ket_self, {}, by_module)


class Metric(ABC):
    """A metric ``M`` on parameter space: reduces gradients to ``H = bᵀ M⁻¹ a``.

    Attributes:
        name: short name (``"identity"``, ``"adam"``, ``"gauss_newton"``).
        element_separable: whether results computed for disjoint element subsets (e.g. on
            different ranks) combine exactly; ``False`` when the metric depends on the bras.
        diagonal: whether ``M`` is diagonal (a per-module breakdown is then exact).
    """

    name: str = "metric"
    element_separable: bool = True
    diagonal: bool = False

    @abstractmethod
    def reduce(self, problem: InfluenceProblem) -> Reduction:
        """Return the raw matrix, self-overlaps and diagnostics for ``problem``."""


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
            second = state[key].detach()
            if second.is_complex():  # Adam keeps complex moments per real component
                second = torch.view_as_real(second)
            bias = 1.0 - group["betas"][1] ** float(state["step"])
            pieces.append((1.0 / ((second / bias).sqrt() + group["eps"])).reshape(-1))
        return torch.cat(pieces).to(fmodel.dtype)

    def __repr__(self) -> str:
        return f"Adam({type(self.optimizer).__name__})"


__all__ = ["Adam", "DiagonalMetric", "Identity", "InfluenceProblem", "Metric", "Reduction"]
