r"""Metrics ``M`` on parameter space, and the reduction to ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m``.

* :mod:`.base` — the :class:`Metric` protocol, the :class:`InfluenceProblem` a metric reduces and
  the streaming reduction every solve-type metric shares;
* :mod:`.diagonal` — :class:`Identity` (``M = I``) and :class:`Adam` (``sqrt(v̂) + eps``);
* :mod:`.gauss_newton` — the damped Gauss–Newton (NTK) metric ``χ = η + λI`` and its solvers:
  :mod:`.cg` (batched conjugate gradients, the reference), preconditioned by :mod:`.nystrom`
  (randomized Nyström), and :mod:`.subspace` (the Galerkin approximation), all on the products
  of :mod:`.linearized`, and :mod:`.ekfac` (the eigenvalue-corrected Kronecker-factored
  approximation, fitted in :mod:`.kronecker` from the layer hooks; also a cg preconditioner).

Example:
    >>> from symcoherence.coherence.metrics import GaussNewton, Identity
    >>> Identity().element_separable, GaussNewton(batch="orbit").element_separable
    (True, False)
"""

from symcoherence.coherence.metrics.base import InfluenceProblem, Metric, Reduction
from symcoherence.coherence.metrics.diagonal import Adam, DiagonalMetric, Identity
from symcoherence.coherence.metrics.gauss_newton import GaussNewton
from symcoherence.coherence.metrics.kronecker import register_curvature_blocks

__all__ = [
    "Adam",
    "DiagonalMetric",
    "GaussNewton",
    "Identity",
    "InfluenceProblem",
    "Metric",
    "Reduction",
    "register_curvature_blocks",
]
