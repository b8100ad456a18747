r"""Projected per-sample gradients of a model sharded with FSDP2, computed on the sharded model.

Under FSDP2 (``fully_shard``) no rank holds a layer's full weight outside its forward and
backward, and ``torch.func`` cannot run on the module. The layer rules need no weight:

.. math:: ∇_W loss_n = \sum_t δ_{n,t} \, u_{n,t}^\top

uses only what the layer saw (``u``) and what came back to it (``δ``)
(:mod:`~symcoherence.coherence.gradients.layer_hooks`). So the sharded model is called as training
calls it — FSDP all-gathers each unit's parameters for its forward and its backward and frees them
after — with the hooks on its layers, and each layer's per-sample gradient is projected by its
block of ``S`` (:mod:`~symcoherence.coherence.gradients.projection`: a Kronecker factor pair or a
count sketch, ``σ``-scaled under a diagonal metric) as soon as the backward completes it, then
dropped. Only the input's gradient is asked for, so no parameter gradient is formed or
reduce-scattered and training's own gradients are untouched.

Memory per rank: the projected rows (``N·d`` numbers), one layer's per-sample gradients of one
chunk, and what FSDP itself gathers for a unit; never the full parameter vector (``σ`` of the
``adam`` metric is the exception: :class:`~symcoherence.coherence.Adam` gathers the second moments,
``P`` numbers). The rows equal those of :class:`~symcoherence.coherence.gradients.projection.ProjectedGradients`
on the gathered model (same blocks, same seed), to rounding. An unscaled Kronecker block is
computed from ``x`` and ``δ`` without forming the weight gradient, ``P_outᵀ G Qᵀ = Σ_t
(P_outᵀ δ_t)(Q u_t)ᵀ``; a ``σ``-scaled one and a count sketch take the layer's exact gradient.

Collective: every rank must make the same calls in the same order (each unit's all-gathers pair
up across ranks), so every rank measures the same probes and elements, and the chunk size is the
smallest any rank's memory budget allows.

Mixed precision: layers that run in bfloat16 under ``MixedPrecisionPolicy`` hand the hooks
bfloat16 activations; they are upcast to the parameters' precision before the products.

Checks, on the first call and before any collective: every selected parameter belongs to a layer
the hooks cover (else a ``ValueError`` names the others), and every sharded parameter to an FSDP
unit inside the model. After the first sample: the first two samples run as one batch and must
reproduce the first sample's row, so that samples which interact (batch statistics) are caught.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from symcoherence.coherence.gradients.chunking import ChunkSize, SavedBytes, resolve_chunk_size
from symcoherence.coherence.gradients.fsdp import check_fsdp_units
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layer_hooks import RULES, LayerGradients
from symcoherence.coherence.gradients.layout import ParameterLayout
from symcoherence.coherence.gradients.parameters import LossFn, Randomness
from symcoherence.coherence.gradients.rows import GradientRows, GradientSource
from symcoherence.coherence.gradients.sketches import KroneckerProjection, plan_projection


class ShardedProjectedGradients(GradientSource):
    """Projected per-sample gradients of an FSDP2-sharded model (see the module docs).

    The interface of :class:`~symcoherence.coherence.gradients.projection.ProjectedGradients`.

    Args:
        projection: the :class:`~symcoherence.coherence.Projection` settings.
        model: the sharded module, called as it is.
        fmodel: its functional model (the selected parameters, their layout, the memory budget;
            never called).
        scale: ``diag(M)^{-1/2}`` ``(P,)`` in ``fmodel``'s layout, or ``None`` for ``M = I``.

    Raises:
        ValueError: for selected parameters the layer hooks do not cover (named), sharded
            parameters outside the model's FSDP units, or a ``dim`` below the number of tensors.
    """

    def __init__(
        self,
        projection,
        model: nn.Module,
        fmodel: FunctionalModel,
        scale: torch.Tensor | None = None,
    ):
        check_fsdp_units(model)
        layers = LayerGradients.covering(model, fmodel.params)
        if layers is None:
            uncovered = [
                name
                for name, tensor in fmodel.params.items()
                if LayerGradients.covering(model, {name: tensor}) is None
            ]
            kinds = sorted(t.__name__ for t in RULES)
            raise ValueError(
                f"the parameters {uncovered or list(fmodel.params)} of the sharded model belong "
                f"to no layer the per-sample hooks cover ({', '.join(kinds)}, and rules given to "
                "register_rule), and a sharded model cannot run under torch.func. Leave them out "
                "with a parameter_filter, give their layer a rule, or measure without a "
                "projection (the monitor then gathers a full copy of the model)"
            )
        self.model, self.fmodel, self.device = model, fmodel, fmodel.device
        self.dtype = fmodel.dtype
        self._layers = layers
        like = torch.empty((), dtype=fmodel.dtype, device=fmodel.device)
        self.plans = plan_projection(projection, model, fmodel.layout, scale, like)
        kronecker = {n: p for n, p in self.plans.items() if isinstance(p, KroneckerProjection)}
        # unscaled Kronecker blocks are projected from x and δ, without the weight gradient
        self._direct = {name for name, plan in kronecker.items() if plan.scale is None}
        self._rules = {
            kronecker[name].module: _projecting_rule(kronecker[name]) for name in self._direct
        }
        # norms are those of the unscaled gradients, as ProjectedGradients defines them
        self._unscaled = {
            name: plan.unscaled() for name, plan in kronecker.items() if plan.scale is not None
        }
        self.layout = ParameterLayout(
            {name: torch.empty(plan.dim, device="meta") for name, plan in self.plans.items()}
        )
        self.largest_chunk = 0
        self._activation_bytes: int | None = None

    def flat_grads(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: ChunkSize = "auto",
        randomness: Randomness = "error",
    ) -> Iterator[GradientRows]:
        """Yield the projected rows of each chunk of samples (every rank, the same chunks).

        Raises:
            ValueError: for active dropout (``randomness`` other than ``"error"``: only ``vmap``
                controls the masks per sample), or samples that interact.
        """
        if randomness != "error":
            raise ValueError(
                f"randomness={randomness!r}: a sharded model is measured through layer hooks, "
                "which cannot give each sample its own dropout mask; measure in eval mode"
            )
        num, start = inputs.shape[0], 0
        if self._activation_bytes is None:
            with SavedBytes() as saved:
                first = self._chunk(loss_fn, inputs[:1], targets[:1], slice(0, 1))
            self._activation_bytes = saved.total
            if num > 1:
                self._check_independent(first, self._chunk(loss_fn, inputs[:2], targets[:2]))
            start = 1
            yield first
        size = self._agreed_chunk_size(chunk_size, num)
        self.largest_chunk = max(self.largest_chunk, min(size, num - start))
        for begin in range(start, num, size):
            samples = slice(begin, min(begin + size, num))
            yield self._chunk(loss_fn, inputs[samples], targets[samples], samples)

    def _chunk(
        self,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        samples: slice | None = None,
    ) -> GradientRows:
        """One batched forward and backward of the sharded model; each layer projected at once."""
        count = inputs.shape[0]
        rows = torch.zeros(count, self.layout.size, dtype=self.fmodel.dtype, device=self.device)
        squares = rows.new_zeros(count)
        pending: dict[str, torch.Tensor] = {}

        def receive(name: str, value: torch.Tensor, complete: bool) -> None:
            value = value + pending.pop(name) if name in pending else value
            if not complete:  # the layer runs again in this forward: wait for all its calls
                pending[name] = value
                return
            flat = value.reshape(count, -1)
            plan = self.plans[name]
            projected = flat if name in self._direct else plan(flat)
            rows[:, self.layout.slices[name]] = projected
            if isinstance(plan, KroneckerProjection):
                unscaled = self._unscaled.get(name)
                projected = projected if unscaled is None else unscaled(flat)
                squares.add_(projected.pow(2).sum(-1))
            else:
                squares.add_(flat.pow(2).sum(-1))
            done.add(name)

        done: set[str] = set()
        losses = self._layers.stream(
            self.model, loss_fn, inputs, targets, receive, dtype=rows.dtype, rules=self._rules
        )
        missing = sorted(set(self.plans) - done)
        if missing:
            raise ValueError(f"the backward did not reach the layers of {missing}")
        return GradientRows(
            slice(0, count) if samples is None else samples, rows, squares.sqrt(), losses
        )

    def _check_independent(self, alone: GradientRows, pair: GradientRows) -> None:
        """The first sample's row must not change when a second sample shares its batch."""
        tolerance = 10 * torch.finfo(alone.rows.dtype).eps ** 0.5 * float(alone.rows.norm())
        if float((pair.rows[0] - alone.rows[0]).norm()) > tolerance:
            raise ValueError(
                "the first sample's gradient changes when a second sample shares its batch: the "
                "samples interact (batch statistics, e.g. BatchNorm in training mode), so "
                "per-sample gradients are not defined; measure in eval mode"
            )

    def _agreed_chunk_size(self, chunk_size: ChunkSize, num: int) -> int:
        """The chunk size every rank can afford: the smallest over ranks."""
        # a chunk holds one layer's per-sample gradients at a time, not the whole vector
        size = resolve_chunk_size(
            chunk_size,
            num,
            max(self.fmodel.layout.sizes.values()),
            self.fmodel.dtype,
            self.device,
            activation_bytes=self._activation_bytes,
            budget_bytes=self.fmodel.memory_budget,
            held_params=self.layout.size,
            batched_backward=True,
        )
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            agreed = torch.tensor([size], dtype=torch.int64, device=self._collective_device())
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            size = int(agreed.item())
        return size

    def _collective_device(self) -> torch.device:
        """Where a tensor for the default process group's backend must live."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _projecting_rule(plan: KroneckerProjection):
    """A layer rule giving the layer's projected weight gradient and its exact bias gradient."""

    def rule(module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        if plan.spatial == 0:  # Linear: (n, *, out), positions before the features
            bias = delta.reshape(delta.shape[0], -1, delta.shape[-1]).sum(1)
        else:  # ConvNd: (n, out, *), positions after the channels
            bias = delta.flatten(2).sum(-1)
        return {"weight": plan.from_layer(x, delta), "bias": bias}

    return rule


__all__ = ["ShardedProjectedGradients"]
