"""Orbit influence: per-sample gradients, metrics, statistics, and one ``measure``.

Pure torch; Lightning never enters this package. Three rooms hold the parts, and the measurement
that uses them sits at this level:

* :mod:`.gradients` — per-sample gradients: layer hooks (one batched backward) where they cover
  the model, ``torch.func.vmap`` where they do not, a per-sample loop where ``vmap`` cannot batch
  it; the parameter layout, chunk sizing and random projections;
* :mod:`.metrics` — the metrics ``M`` (identity, Adam, Gauss–Newton and its solvers);
* :mod:`.statistics` — normalizations, per-probe statistics with their bootstrap, decision rules,
  summaries and the logged keys.

The measurement, in the order it runs:

* :class:`MeasurementSpec` — every setting, validated once; :func:`measure` — the one path that
  the callback, ``symcoherence analyze`` and scripts share, returning a :class:`Measurement`;
* :func:`per_sample_grads` — ``a_n = ∇θ loss(f_θ(x_n), y_n)`` (see :mod:`.gradients`);
  :func:`register_rule` teaches the layer hooks a layer type of one's own;
* metrics ``M``: :class:`Identity`, :class:`Adam`, :class:`GaussNewton`;
* :func:`orbit_influence` — ``H^g[n, m] = (b_n^g)ᵀ M⁻¹ a_m``, streamed over elements, exactly
  or on seeded random projections of the gradients (:class:`Projection`, for large models);
* :class:`OrbitInfluence` — raw parts and normalizations; its :class:`Summary` holds the
  coherence ratio, specific coupling, distribution transfer, random-pair baselines and bootstrap
  intervals, under the key names of :class:`Keys`;
* :func:`equivariance_error`, :func:`rollout_equivariance_error` — forward errors;
* :func:`smse` — the default per-sample loss.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)             # zero padding breaks shift symmetry
    >>> x, y = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    >>> result = sc.orbit_influence(net, sc.smse, x, y, sc.groups.C4(), sc.FieldType(["scalar"]))
    >>> [row.element for row in result.summarize()]
    ['e', 'r', 'r2', 'r3']
    >>> "coherence/C4/ratio_lo/r" in result.summary()      # every statistic has its interval
    True
"""

from symcoherence.coherence.equivariance import equivariance_error, rollout_equivariance_error
from symcoherence.coherence.gradients import LossFn, Projection, per_sample_grads, register_rule
from symcoherence.coherence.influence import orbit_influence
from symcoherence.coherence.loss import smse
from symcoherence.coherence.measurement import Measurement, measure
from symcoherence.coherence.metrics import Adam, DiagonalMetric, GaussNewton, Identity, Metric
from symcoherence.coherence.result import OrbitInfluence
from symcoherence.coherence.spec import METRIC_NAMES, MeasurementSpec, resolve_metric
from symcoherence.coherence.statistics import (
    NORMALIZATIONS,
    DecisionRule,
    ElementSummary,
    Keys,
    Summary,
    normalize,
)

__all__ = [
    "METRIC_NAMES",
    "NORMALIZATIONS",
    "Adam",
    "DecisionRule",
    "DiagonalMetric",
    "ElementSummary",
    "GaussNewton",
    "Identity",
    "Keys",
    "LossFn",
    "Measurement",
    "MeasurementSpec",
    "Metric",
    "OrbitInfluence",
    "Projection",
    "Summary",
    "equivariance_error",
    "measure",
    "normalize",
    "orbit_influence",
    "per_sample_grads",
    "register_rule",
    "resolve_metric",
    "rollout_equivariance_error",
    "smse",
]
