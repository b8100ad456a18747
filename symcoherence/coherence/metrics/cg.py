r"""Batched preconditioned conjugate gradients: many right-hand sides share each product.

Solves ``A y_i = v_i`` for rows ``v_i`` of ``(c, P)`` with ``A`` symmetric positive definite given
only as a batched product, the Gauss–Newton reference's ``χ = η + λI``.

Example:
    >>> import torch
    >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> result = batched_cg(lambda rows: rows @ a, torch.tensor([[1.0, 2.0]]), 1e-8, 10)
    >>> [round(v, 4) for v in result.solution[0].tolist()], result.converged
    ([0.0909, 0.6364], True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class CGResult(NamedTuple):
    """Outcome of :func:`batched_cg`.

    Attributes:
        solution: ``y`` ``(c, P)``.
        iterations: products with ``A`` in the loop.
        residual: worst true relative residual ``‖v − A y‖ / ‖v‖`` over rows.
        converged: whether every row met the tolerance before the iteration cap.
    """

    solution: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def relative_residual(rhs: torch.Tensor, image: torch.Tensor) -> float:
    """Worst ``‖v − A y‖ / ‖v‖`` over rows, from ``v`` and ``A y`` ``(c, P)`` (0 for zero rows)."""
    norm = rhs.norm(dim=-1)
    ratios = (rhs - image).norm(dim=-1) / torch.where(norm > 0, norm, 1.0)
    return float(ratios.max()) if ratios.numel() else 0.0


def batched_cg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    tol: float,
    max_iter: int,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CGResult:
    r"""Preconditioned conjugate gradients for ``A y_i = v_i``, ``A`` symmetric positive definite.

    Every row is an independent system; all rows share each (batched) product with ``A``.

    Args:
        matvec: ``(c, P) -> (c, P)``, rows mapped by ``A``.
        rhs: right-hand sides as rows ``(c, P)``.
        tol: stop a row once its recurrence residual ``‖v − A y‖ ≤ tol ‖v‖``.
        max_iter: at most this many products with ``A`` (plus one for the true residual).
        preconditioner: ``r ↦ M⁻¹ r`` on rows, ``M ≈ A`` symmetric positive definite; ``None`` for
            plain cg.

    Returns:
        :class:`CGResult`; zero rows give zero solutions and residual 0.
    """
    precondition = preconditioner if preconditioner is not None else (lambda rows: rows)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    search = precondition(residual)
    direction = search.clone()
    rz = (residual * search).sum(-1)
    norm = rhs.norm(dim=-1)
    iterations = 0
    done = residual.norm(dim=-1) <= tol * norm
    while not bool(done.all()) and iterations < max_iter:
        product = matvec(direction)
        iterations += 1
        curvature = (direction * product).sum(-1)
        alpha = torch.where(done, 0.0, rz / torch.where(done, 1.0, curvature))
        solution += alpha[:, None] * direction
        residual -= alpha[:, None] * product
        done = done | (residual.norm(dim=-1) <= tol * norm)
        search = precondition(residual)
        rz_new = (residual * search).sum(-1)
        beta = torch.where(done, 0.0, rz_new / torch.where(rz != 0, rz, 1.0))
        direction = search + beta[:, None] * direction
        rz = torch.where(done, rz, rz_new)
    worst = relative_residual(rhs, matvec(solution))
    return CGResult(solution, iterations, worst, bool(done.all()))


__all__ = ["CGResult", "batched_cg", "relative_residual"]
