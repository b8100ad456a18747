r"""The model linearized at ``θ``: ``J v`` and ``Jᵀ u`` products, and ``η = s JᵀJ`` from them.

``J = ∂f_θ(x_{1..B})/∂θ`` of a batched forward is never formed: ``J v`` is a ``jvp`` and ``Jᵀ u`` a
``vjp``, both vmapped over many vectors in row chunks that bound the activation memory.

Example:
    >>> import torch
    >>> from symcoherence.coherence.gradients import FunctionalModel
    >>> net = torch.nn.Linear(3, 2, bias=False)
    >>> x = torch.randn(5, 3)
    >>> eta = GaussNewtonMatrix(LinearizedModel(FunctionalModel(net), x), scale=1.0)
    >>> v = torch.randn(1, 6)
    >>> torch.allclose(eta.quadratic(v), (eta(v) * v).sum(-1), atol=1e-4)
    True
"""

from __future__ import annotations

import torch
from torch.func import jvp, vjp, vmap

from symcoherence.coherence.gradients.functional import FunctionalModel

# Products with many vectors are vmapped in row chunks: one call sees at most this many samples
# (vectors × probe batch), which bounds the activation memory of the batched jvp / vjp.
SAMPLES_PER_CALL = 64


class LinearizedModel:
    """``J v`` and ``Jᵀ u`` of the batched forward ``θ ↦ f_θ(inputs)`` at the current ``θ``.

    Args:
        fmodel: the functional model.
        inputs: the batch ``(B, C, H, W)`` the Jacobian is taken on.
    """

    def __init__(self, fmodel: FunctionalModel, inputs: torch.Tensor):
        self.fmodel = fmodel

        def forward(params):
            return fmodel(params, inputs)

        self._forward = forward
        outputs, self._vjp = vjp(forward, fmodel.params)
        self.output_shape = outputs.shape
        self.batch_size = inputs.shape[0]
        self.num_outputs = outputs.numel()

    def _rows(self, total: int) -> list[slice]:
        """Row chunks so that one vmapped call sees at most ``SAMPLES_PER_CALL`` batched samples."""
        step = max(1, SAMPLES_PER_CALL // max(self.batch_size, 1))
        return [slice(start, min(start + step, total)) for start in range(0, total, step)]

    def jvp(self, vectors: torch.Tensor) -> torch.Tensor:
        """``J v`` for rows ``v`` of ``(c, P)`` -> ``(c, F)``."""

        def one(tangent):
            return jvp(self._forward, (self.fmodel.params,), (tangent,))[1].reshape(-1)

        batched = vmap(one)
        return torch.cat(
            [
                # complex parameters are viewed as (real, imag) pairs: rows must be contiguous
                batched(self.fmodel.layout.unflatten(vectors[rows].contiguous()))
                for rows in self._rows(len(vectors))
            ]
        )

    def vjp(self, cotangents: torch.Tensor) -> torch.Tensor:
        """``Jᵀ u`` for rows ``u`` of ``(c, F)`` -> ``(c, P)``."""
        batched = vmap(lambda u: self._vjp(u)[0])
        return torch.cat(
            [
                self.fmodel.layout.flatten(
                    batched(cotangents[rows].reshape(-1, *self.output_shape))
                )
                for rows in self._rows(len(cotangents))
            ]
        )


class GaussNewtonMatrix:
    r"""``η = s JᵀJ`` on a batch, as products: ``η v = s Jᵀ(J v)``.

    Args:
        linear: ``J`` of the batch.
        scale: ``s`` (``1/F`` for the default convention).
    """

    def __init__(self, linear: LinearizedModel, scale: float):
        self.linear, self.scale = linear, scale
        self.size = linear.fmodel.layout.size

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """``η v`` for rows ``(c, P)``."""
        return self.scale * self.linear.vjp(self.linear.jvp(rows))

    def quadratic(self, rows: torch.Tensor) -> torch.Tensor:
        """``vᵀ η v = s ‖J v‖²`` for rows ``(c, P)`` -> ``(c,)`` (``jvp`` only)."""
        return self.scale * self.linear.jvp(rows).pow(2).sum(-1)


__all__ = ["GaussNewtonMatrix", "LinearizedModel"]
