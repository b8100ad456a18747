"""Orbit influence with ``torch.func``: per-sample gradients, metrics, normalizations, summaries.

Pure torch; Lightning never enters this package. The pieces, in the order the engine uses them:

* :func:`per_sample_grads` — ``a_n = ∇θ loss(f_θ(x_n), y_n)`` with ``vmap(grad)``;
* metrics ``M``: :class:`Identity`, :class:`Adam`, :class:`GaussNewton` (``cg`` / ``subspace``);
* :func:`orbit_influence` — ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m``, streamed over elements;
* :class:`OrbitInfluence` — raw parts, normalizations (``standard`` / ``cosine`` / ``none``) and
  the logged summary;
* :func:`equivariance_error`, :func:`rollout_equivariance_error` — forward errors;
* :func:`smse` — the default per-sample loss.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)             # zero padding breaks shift symmetry
    >>> x, y = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    >>> result = sc.orbit_influence(net, sc.smse, x, y, sc.groups.C4(), sc.FieldType(["scalar"]))
    >>> sorted(result.summary())[:2]
    ['baseline/C4/offdiag_median', 'basin/C4/compatibility']
"""

from symcoherence.coherence.equivariance import equivariance_error, rollout_equivariance_error
from symcoherence.coherence.gauss_newton import GaussNewton
from symcoherence.coherence.influence import METRIC_NAMES, orbit_influence, resolve_metric
from symcoherence.coherence.loss import smse
from symcoherence.coherence.metrics import Adam, DiagonalMetric, Identity, Metric
from symcoherence.coherence.normalization import NORMALIZATIONS, normalize
from symcoherence.coherence.per_sample import per_sample_grads
from symcoherence.coherence.result import OrbitInfluence

__all__ = [
    "METRIC_NAMES",
    "NORMALIZATIONS",
    "Adam",
    "DiagonalMetric",
    "GaussNewton",
    "Identity",
    "Metric",
    "OrbitInfluence",
    "equivariance_error",
    "normalize",
    "orbit_influence",
    "per_sample_grads",
    "resolve_metric",
    "rollout_equivariance_error",
    "smse",
]
