r"""Seeded random projections of per-sample gradients: the orbit influence in ``d ≪ P`` numbers.

A :class:`Projection` maps every per-sample gradient ``a ∈ R^P`` to ``S a ∈ R^d`` with one seeded
random matrix ``S`` (the same for kets and bras), scaled so that inner products are preserved in
expectation, ``E[(S b)ᵀ (S a)] = bᵀ a``, hence ``E[H_S] = H`` for

.. math:: H_S^g[n, m] = (S M^{-1/2} b_n^g)^T (S M^{-1/2} a_m)

with a diagonal metric ``M`` (``M = I`` for the identity metric). ``S`` is block diagonal over
the parameter tensors, and each block gets about the same number of dimensions: a tensor with
``p_l`` numbers gets ``d_l = min(p_l, λ)`` with ``λ`` the largest level such that
``Σ_l d_l ≤ d``; tensors smaller than ``λ`` are kept exactly (their block is the identity), so
``d ≥ P`` reproduces the exact engine. The blocks are

* **Kronecker** (LoGra, Choe et al. 2024), for the weight of a ``Linear`` or ``Conv1d/2d/3d``
  layer (``groups=1``) used only through that layer's forward: the weight's gradient reshaped to
  ``G ∈ R^{n_out × m}`` (``m = n_in · kernel size``) is projected to
  ``P_outᵀ G Qᵀ ∈ R^{k_out × k_in}`` with Gaussian factors ``P_out ∈ R^{n_out × k_out}``
  (entries ``N(0, 1/k_out)``) and ``Q ∈ R^{k_in × m}`` (entries ``N(0, 1/k_in)``); a factor with
  ``k`` equal to its full size is the identity. It is computed without ever forming ``G``: the
  layer's output gets the extra term ``P_out Z (Q ⋆ x)`` with ``Z = 0`` (``Q ⋆ x``: the layer's
  own convolution, or product, of its input with the ``k_in`` filters of ``Q``), whose gradient
  with respect to ``Z`` is exactly ``P_outᵀ G Qᵀ``. The backward pass then never computes the
  layer's weight gradient, only ``k_in`` projected input channels and ``k_out`` projected output
  gradients (TRAK, Park et al. 2023, motivates the random features; LoGra the structure). With a
  diagonal metric the term is ``(σ ⊙ P_out Z Q) ⋆ x`` with ``σ = diag(M)^{-1/2}`` instead.
  The ranks are ``k_out ≈ k_in ≈ √d_l`` as far as the layer's sizes allow. The layer is projected this way
  only where the term costs fewer multiply-adds per output position than its weight gradient
  would (``2 k_in m + 2 n_out k_out + 4 k_out k_in < n_out m``): wide layers, in practice.
* **Count sketch** for every other tensor (biases, normalization scales, spectral weights,
  complex parameters as real pairs, narrow layers): coordinate ``i`` of its flat (``σ``-scaled)
  per-sample gradient is added with a random sign to one of ``d_l`` random buckets. Its error is
  that of a dense Gaussian projection; a Kronecker block's is larger at the same ``d_l`` (about
  twice the relative error of ``H`` measured on a 13M-parameter U-Net), for far less work.

Memory: the ``(N, d)`` projected kets, one chunk of projected bras, the factors (far smaller than
the model), a chunk's per-sample gradients of the count-sketched tensors and one sample's exact
gradient for the check below: ``O(N·d + model)``.

Choosing ``d``: the error of ``H`` falls as ``1/√d``, and the coherence ratio (a ratio of medians
of rows divided by their spread) amplifies it, most at few probes. Measured against the exact
engine (largest ``|Δρ(g)|`` over the elements, fp32, CPU): small U-Net preset (0.28M parameters,
64², D4, N = 16) 0.012 at ``d = 2^16``; U-Net of 101M parameters (32², N = 8, four elements)
0.17 at ``2^16`` and 0.018 at ``2^20``, with 0.7 and 0.9 GB of peak extra memory against 9.5 GB
exact. Hence the default ``d = 2^20`` (4 MiB per probe in float32), which keeps models below
about a million parameters exact.

Norms: the distribution transfer divides by the Euclidean norm ``‖b‖`` of each unprojected,
unscaled gradient. :meth:`ProjectedGradients.flat_grads` yields it exactly over the count-sketched
tensors and, over the Kronecker-projected weights, as the norm of their projection; under a metric
each Kronecker term gets an unscaled twin (same factors, its own zero parameter) for that purpose.

Which metrics work: ``"identity"`` and ``"adam"`` (any diagonal metric). The Gauss–Newton
metric multiplies by the model's Jacobian in the full parameter space (``jvp``/``vjp``) and
cannot act on projected gradients: it is refused with a ``ValueError``.

Check: on the first sample, the projected gradient is compared with the projection of the exact
gradient; a layer whose weight also enters the loss outside its own forward is reported.

Example:
    >>> import torch
    >>> import symcoherence as sc
    >>> from symcoherence.coherence import Projection
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    >>> x, y = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    >>> shifts = sc.groups.Shifts(line=("x", [1, 2]))
    >>> result = sc.orbit_influence(
    ...     net, sc.smse, x, y, shifts, sc.FieldType(["scalar"]), projection=Projection(dim=4)
    ... )
    >>> result.info["projection_dim"], [round(r, 4) for r in result.ratio.tolist()]
    (4, [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from symcoherence.coherence.gradients.chunking import ChunkSize
from symcoherence.coherence.gradients.fsdp import is_sharded
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layout import ParameterLayout
from symcoherence.coherence.gradients.parameters import LossFn, Randomness
from symcoherence.coherence.gradients.rows import GradientRows, GradientSource
from symcoherence.coherence.gradients.sharded import ShardedProjectedGradients
from symcoherence.coherence.gradients.sketches import (
    DEFAULT_DIM,
    KroneckerProjection,
    Reparametrized,
    allocate,
    plan_projection,
)


@dataclass(frozen=True)
class Projection:
    """Settings of a seeded random projection of per-sample gradients (see the module docs).

    Args:
        dim: target dimension ``d`` (the sum of the per-tensor dimensions stays ``≤ d``; see
            "Choosing d" in the module docs for the default ``2^20``).
        seed: seed of the random factors, buckets and signs (drawn on the CPU, so the same on
            every device).

    Raises:
        ValueError: if ``dim`` is not a positive int or ``seed`` not a non-negative int.

    Example:
        >>> Projection(dim=4096, seed=1)
        Projection(dim=4096, seed=1)
    """

    dim: int = DEFAULT_DIM
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("dim", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"Projection {name} must be an integer >= {minimum}, got {value!r}"
                )

    def bind(
        self, model: nn.Module, fmodel: FunctionalModel, scale: torch.Tensor | None = None
    ) -> ProjectedGradients | ShardedProjectedGradients:
        """The projected gradients of ``model``.

        A :class:`ProjectedGradients`; for a model sharded with FSDP2, a
        :class:`~symcoherence.coherence.gradients.sharded.ShardedProjectedGradients`, which
        measures the sharded model itself.

        Args:
            model: the module.
            fmodel: its functional model (the selected parameters).
            scale: ``diag(M)^{-1/2}`` of a diagonal metric in ``fmodel``'s layout (``None``:
                ``M = I``).
        """
        if is_sharded(model):
            return ShardedProjectedGradients(self, model, fmodel, scale)
        return ProjectedGradients(self, model, fmodel, scale)


class ProjectedGradients(GradientSource):
    r"""Per-sample gradients projected to ``d`` numbers, with the interface of the exact ones.

    :meth:`flat_grads` and :meth:`flat_grad_matrix` yield ``(c, d)`` blocks and an ``(N, d)``
    matrix (each with the Euclidean norms of the unprojected gradients) where :class:`~symcoherence.coherence.gradients.functional.FunctionalModel` yields ``(c, P)`` and
    ``(N, P)``; ``layout`` names the columns of each parameter tensor in the projected vector.

    Args:
        projection: the settings.
        model: the module (only hooked while gradients are computed).
        fmodel: its functional model (the selected parameters).
        scale: ``diag(M)^{-1/2}`` ``(P,)`` in ``fmodel``'s layout, or ``None`` for ``M = I``.

    Attributes:
        layout: a :class:`~symcoherence.coherence.gradients.layout.ParameterLayout` of the projected
            vector (``layout.size`` is ``d``; ``layout.slices[name]`` the columns of a tensor).
        device: where the projected gradients live.
    """

    def __init__(
        self,
        projection: Projection,
        model: nn.Module,
        fmodel: FunctionalModel,
        scale: torch.Tensor | None = None,
    ):
        self.projection, self.fmodel, self.device = projection, fmodel, fmodel.device
        self.dtype = fmodel.dtype
        like = torch.empty((), dtype=fmodel.dtype, device=fmodel.device)
        self.plans = plan_projection(projection, model, fmodel.layout, scale, like)
        self._kronecker = {
            n: p for n, p in self.plans.items() if isinstance(p, KroneckerProjection)
        }
        # with a metric the Kronecker terms project σ ⊙ G; an unscaled twin term (same factors)
        # projects G itself, for the Euclidean gradient norms that flat_grads yields
        self._unscaled = {
            name: plan.unscaled()
            for name, plan in self._kronecker.items()
            if plan.scale is not None
        }
        terms = [*self._kronecker.values(), *self._unscaled.values()]
        self._wrapper = Reparametrized(model, {p.key: (p.k_out, p.k_in) for p in terms}, like)
        self._sources = {
            name: f"kronecker.{plan.key}" if name in self._kronecker else f"model.{name}"
            for name, plan in self.plans.items()
        }
        self._unscaled_sources = {n: f"kronecker.{p.key}" for n, p in self._unscaled.items()}
        self._functional = FunctionalModel(
            self._wrapper,
            [*self._sources.values(), *self._unscaled_sources.values()],
            held_params=sum(plan.dim for plan in self.plans.values()),
            max_memory=fmodel.memory_budget,
        )
        self.layout = ParameterLayout(
            {name: torch.empty(plan.dim, device="meta") for name, plan in self.plans.items()}
        )
        self._checked = False

    @property
    def largest_chunk(self) -> int:
        """The most samples one batched call has taken so far."""
        return self._functional.largest_chunk

    def project(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Project exact gradients ``{name: (c, *shape)}`` (every selected tensor) to ``(c, d)``."""
        parts = []
        for name, plan in self.plans.items():
            grad = grads[name]
            if grad.is_complex():
                grad = torch.view_as_real(grad)
            parts.append(plan(grad.reshape(grad.shape[0], -1)))
        return torch.cat(parts, dim=1)

    def matrix(self, name: str) -> torch.Tensor:
        """The dense ``(d_l, p_l)`` block of ``S`` for tensor ``name`` (for tests on small models)."""
        return self.plans[name].matrix()

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(P_out, Q)`` of a Kronecker-projected tensor, ``None`` for a count-sketched one."""
        plan = self.plans[name]
        return (plan.out_factor, plan.in_factor) if isinstance(plan, KroneckerProjection) else None

    def flat_grads(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> Iterator[GradientRows]:
        """Yield ``(samples, (c, d) projected gradients, (c,) norms)`` per chunk of samples.

        The norms are those of the unprojected, unscaled gradients (see the module docstring):
        exact over the count-sketched tensors (their flat gradients exist) and, over the
        Kronecker-projected weights, the norm of their projection without the metric's scale
        (exact where the factors are complete, unbiased in square otherwise), so that statistics
        normalized by ``‖a‖`` mean the same as without a projection.

        Raises:
            ValueError: on the first call, if the loss does not depend on some selected
                parameter, or if a projected layer's weight enters the loss other than through
                the layer's own forward (its projected gradient differs from the projection of
                its exact gradient).
        """
        expected = None
        if not self._checked and randomness == "error":
            exact, _ = self.fmodel._autograd_grad(loss_fn, inputs[0], targets[0])
            expected = self.project({n: g.unsqueeze(0) for n, g in exact.items()})
            del exact
        blocks = self._functional.flat_grads(loss_fn, inputs, targets, chunk_size, randomness)
        while True:
            with self._hooks():
                item = next(blocks, None)
            if item is None:
                return
            projected, norms = self._assemble(item.rows)
            if expected is not None:
                self._check(projected[:1], expected)
                expected = None
            self._checked = True
            yield GradientRows(item.samples, projected, norms, item.losses)

    def _assemble(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the reparametrized model ``(c, P')`` -> projected ``(c, d)`` and norms."""
        slices = self._functional.layout.slices
        parts, squares = [], block.new_zeros(block.shape[0])
        for name, plan in self.plans.items():
            part = block[:, slices[self._sources[name]]]
            parts.append(part if name in self._kronecker else plan(part))
            unscaled = self._unscaled_sources.get(name)
            squares += (part if unscaled is None else block[:, slices[unscaled]]).pow(2).sum(-1)
        return torch.cat(parts, dim=1), squares.sqrt()

    def _check(self, projected: torch.Tensor, expected: torch.Tensor) -> None:
        """Compare the first sample's two projections tensor by tensor."""
        # Agreement to half the digits of the dtype, relative to the tensor's block or, for a
        # block that nearly vanishes, to that squared times the whole gradient: the two paths
        # differ in the order of operations only, whereas a missed use of a weight changes its
        # block at order one.
        tolerance = torch.finfo(projected.dtype).eps ** 0.5
        total = float(expected.norm())
        wrong = [
            name
            for name, part in self.layout.slices.items()
            if float((projected[:, part] - expected[:, part]).norm())
            > tolerance * (float(expected[:, part].norm()) + tolerance * total)
        ]
        if wrong:
            raise ValueError(
                f"the projected gradients of {wrong} differ from the projection of their exact "
                "gradients on the first sample: their weights enter the loss other than through "
                "their layers' own forward (used directly by another module, or modified by a "
                "hook), which the Kronecker projection cannot see. Measure without a projection, "
                "or leave these parameters out with a parameter_filter"
            )

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        """Forward hooks adding each Kronecker term to its layer's output, for the block."""
        terms = [*self._kronecker.values(), *self._unscaled.values()]
        handles = [plan.module.register_forward_hook(self._hook(plan)) for plan in terms]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, plan: KroneckerProjection):
        zeros = self._wrapper.kronecker

        def hook(module, args, output):
            return output + plan.delta(args[0], zeros[plan.key])

        return hook


__all__ = ["DEFAULT_DIM", "ProjectedGradients", "Projection", "allocate"]
