r"""Per-sample gradients ``a_n = ∇θ loss(f_θ(x_n), y_n)``: the engines, their layout and chunks.

Which engine computes them, and when (:class:`FunctionalModel` chooses, once per measurement):

* :mod:`.layer_hooks` — one batched backward with hooks on ``nn.Linear``, ``nn.Conv2d``,
  ``nn.GroupNorm``, ``nn.LayerNorm``, eval-mode BatchNorm and layers with a rule given to
  :func:`register_rule`; used wherever every measured parameter belongs to such a layer, and kept
  only if it reproduces one plain autograd gradient;
* :mod:`.vmap` — ``torch.func.vmap(grad(·))`` otherwise (and for active dropout);
* :mod:`.loop` — one ``torch.autograd.grad`` per sample where ``vmap`` cannot batch the model;
* :mod:`.projection` — seeded random projections of the gradients to ``d ≪ P`` numbers
  (:class:`Projection`; its sketches in :mod:`.sketches`), for models too large for exact rows;
* :mod:`.sharded` — the same projection computed on a model sharded with FSDP2, by the layer
  hooks of its sharded layers (what FSDP changes about a module: :mod:`.fsdp`).

Around them: :mod:`.parameters` (what is differentiated, the mode checks), :mod:`.layout` (the
flat vector of a parameter dict), :mod:`.chunking` (how many samples one call takes),
:mod:`.rows` (the chunks every source yields) and :mod:`.per_sample` (the public
:func:`per_sample_grads`).

A layer of one's own joins the hooks through :func:`register_rule` (its per-sample gradients from
what the layer saw and what came back to it); without a rule, its model takes ``vmap``.
"""

from symcoherence.coherence.gradients.chunking import ChunkSize
from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layer_hooks import register_rule
from symcoherence.coherence.gradients.layout import ParameterLayout
from symcoherence.coherence.gradients.parameters import LossFn, ParameterFilter, Randomness
from symcoherence.coherence.gradients.per_sample import per_sample_grads
from symcoherence.coherence.gradients.projection import Projection
from symcoherence.coherence.gradients.rows import GradientRows

__all__ = [
    "ChunkSize",
    "FunctionalModel",
    "GradientRows",
    "LossFn",
    "ParameterFilter",
    "ParameterLayout",
    "Projection",
    "Randomness",
    "per_sample_grads",
    "register_rule",
]
