r"""The two random projections a gradient block can take (see :mod:`.projection` for their use).

* :class:`CountSketch` — coordinate ``i`` of a flat (``σ``-scaled) gradient is added with a random
  sign ``s_i`` to a random bucket ``h(i)``: ``y[j] = Σ_{h(i)=j} s_i σ_i g_i``, so
  ``E[yᵀy'] = Σ_i σ_i² g_i g'_i``;
* :class:`KroneckerProjection` — the weight gradient ``G ∈ R^{n_out × m}`` of a Linear / ConvNd
  layer to ``P_outᵀ (σ ⊙ G) Qᵀ ∈ R^{k_out × k_in}`` with Gaussian factors, computed in the
  backward pass through the output term ``P_out Z (Q ⋆ x)`` of a zero parameter ``Z``
  (:class:`Reparametrized` holds the ``Z``).

Example:
    >>> import torch
    >>> sketch = CountSketch(5, 5, None, torch.Generator().manual_seed(0), torch.zeros(1))
    >>> sketch(torch.arange(5.0)[None]).tolist()      # d ≥ p: the identity
    [[0.0, 1.0, 2.0, 3.0, 4.0]]
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from symcoherence.coherence.gradients.parameters import tied_aliases

DEFAULT_DIM = 2**20


def kronecker_ranks(target: int, rows: int, columns: int) -> tuple[int, int] | None:
    """``(k_out, k_in)`` with ``k_out·k_in ≤ target``, as balanced as ``rows``, ``columns`` allow.

    ``None`` where the hooked term would cost more multiply-adds per output position (the ``Q``
    filters forward and backward, the products with ``Z`` and ``P_out``) than the layer's weight
    gradient (``rows·columns``), which the count sketch then projects instead.
    """
    k_out = min(rows, max(1, math.isqrt(target)))
    k_in = min(columns, max(1, target // k_out))
    if k_in == columns:
        k_out = min(rows, max(1, target // columns))
    added = 2 * k_in * columns + 2 * rows * k_out + 4 * k_out * k_in
    return (k_out, k_in) if added < rows * columns else None


def gaussian(rows: int, columns: int, variance_dim: int, generator, like) -> torch.Tensor:
    """``(rows, columns)`` with entries ``N(0, 1/variance_dim)``, drawn in float64 on the CPU."""
    draw = torch.randn(rows, columns, generator=generator, dtype=torch.float64)
    return (draw / math.sqrt(variance_dim)).to(like)


class CountSketch:
    """Count sketch of one tensor's flat gradient ``(c, p) -> (c, d_l)`` (identity when exact).

    ``y[j] = Σ_{i: h(i) = j} s_i σ_i g_i`` with uniform buckets ``h(i)`` and signs ``s_i = ±1``;
    ``E[yᵀ y'] = Σ_i σ_i² g_i g'_i``.
    """

    def __init__(self, size: int, dim: int, scale: torch.Tensor | None, generator, like):
        self.dim = dim
        if dim >= size:
            self.buckets = torch.arange(size, device=like.device)
            signs = torch.ones(size, dtype=like.dtype, device=like.device)
        else:  # int64 buckets: index_add_ runs several times slower with int32 ones on CPU
            self.buckets = torch.randint(0, dim, (size,), generator=generator).to(like.device)
            signs = (2 * torch.randint(0, 2, (size,), generator=generator) - 1).to(like)
        self.signs = signs if scale is None else signs * scale

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat gradients ``(c, p)`` -> ``(c, d_l)``."""
        out = flat.new_zeros(flat.shape[0], self.dim)
        return out.index_add_(1, self.buckets, flat * self.signs)

    def matrix(self) -> torch.Tensor:
        """The dense ``(d_l, p)`` matrix."""
        dense = self.signs.new_zeros(self.dim, self.signs.numel())
        dense[self.buckets, torch.arange(self.signs.numel(), device=dense.device)] = self.signs
        return dense


class KroneckerProjection:
    """Kronecker projection ``G -> P_outᵀ (σ ⊙ G) Qᵀ`` of a Linear / ConvNd weight gradient.

    ``key`` names the zero parameter ``Z`` ``(k_out, k_in)`` of the reparametrized model.
    """

    def __init__(self, module: nn.Module, key: str, ranks, scale, generator, like):
        self.module, self.key = module, key
        weight = module.weight
        self.shape = weight.shape
        self.rows, self.columns = rows, columns = _matrix_shape(weight)
        self.k_out, self.k_in = ranks
        self.dim = self.k_out * self.k_in
        self.out_factor = (
            torch.eye(rows, dtype=like.dtype, device=like.device)
            if self.k_out == rows
            else gaussian(rows, self.k_out, self.k_out, generator, like)
        )
        self.in_factor = (
            torch.eye(columns, dtype=like.dtype, device=like.device)
            if self.k_in == columns
            else gaussian(self.k_in, columns, self.k_in, generator, like)
        )
        self.scale = None if scale is None else scale.reshape(rows, columns)
        self.spatial = weight.dim() - 2  # 0 for Linear

    def unscaled(self) -> KroneckerProjection:
        """The same projection without ``σ`` (same factors), on its own zero parameter."""
        twin = copy.copy(self)
        twin.key, twin.scale = f"{self.key}/unscaled", None
        return twin

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        """Exact weight gradients ``(c, *shape)`` -> ``(c, k_out·k_in)``."""
        grad = grad.reshape(grad.shape[0], self.rows, self.columns)
        if self.scale is not None:
            grad = grad * self.scale
        return (self.out_factor.T @ grad @ self.in_factor.T).flatten(1)

    def matrix(self) -> torch.Tensor:
        """The dense ``(k_out·k_in, n_out·m)`` matrix ``P_outᵀ ⊗ Q`` (times ``σ`` column-wise)."""
        dense = torch.kron(self.out_factor.T.contiguous(), self.in_factor)
        return dense if self.scale is None else dense * self.scale.reshape(1, -1)

    def delta(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The output term ``P_out Z (Q ⋆ x)`` (or ``(σ ⊙ P_out Z Q) ⋆ x``) of input ``x``."""
        module = self.module
        if self.scale is not None:
            weight = (self.scale * (self.out_factor @ z @ self.in_factor)).reshape(self.shape)
            return (
                F.linear(x, weight) if self.spatial == 0 else module._conv_forward(x, weight, None)
            )
        features = self.input_features(x)
        if self.spatial == 0:
            return F.linear(F.linear(features, z), self.out_factor)
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.spatial - 1]
        pointwise = (1,) * self.spatial
        mixed = conv(features, z.reshape(*z.shape, *pointwise))
        return conv(mixed, self.out_factor.reshape(*self.out_factor.shape, *pointwise))

    def from_layer(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``P_outᵀ G_n Qᵀ`` per row, from what the layer saw (``x``) and got back (``δ``).

        ``G_n = Σ_t δ_{n,t} u_{n,t}ᵀ`` is never formed: ``P_outᵀ G_n Qᵀ = Σ_t (P_outᵀ δ_{n,t})
        (Q u_{n,t})ᵀ``, the ``k_out`` projected output gradients against the ``k_in`` projected
        input channels ``Q ⋆ x``. Unscaled only (``σ ⊙ G`` does not factor).

        Returns:
            ``(rows, k_out·k_in)``, flattened as :meth:`__call__` flattens.
        """
        if self.scale is not None:
            raise ValueError("a σ-scaled Kronecker projection needs the layer's weight gradient")
        rows, features = x.shape[0], self.input_features(x)
        if self.spatial == 0:
            features = features.reshape(rows, -1, self.k_in)
            outputs = (delta @ self.out_factor).reshape(rows, -1, self.k_out).transpose(1, 2)
        else:
            features = features.flatten(2).transpose(1, 2)
            outputs = torch.matmul(self.out_factor.T, delta.flatten(2))
        return torch.bmm(outputs, features).flatten(1)

    def input_features(self, x: torch.Tensor) -> torch.Tensor:
        """``Q ⋆ x``: the ``k_in`` rows of ``Q`` applied as the layer applies its weight."""
        if self.spatial == 0:
            return F.linear(x, self.in_factor)
        filters = self.in_factor.reshape(self.k_in, *self.shape[1:])
        return self.module._conv_forward(x, filters, None)


def kronecker_module(model: nn.Module, name: str, tied: set[str]) -> nn.Module | None:
    """The Linear / ConvNd (``groups=1``) whose own weight ``name`` is, else ``None``."""
    prefix, _, leaf = name.rpartition(".")
    if leaf != "weight" or name in tied:
        return None
    module = model.get_submodule(prefix)
    if isinstance(module, nn.Linear):
        return module
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1:
        return module
    return None


def allocate(sizes: list[int], dim: int) -> list[int]:
    """Per-tensor dimensions ``d_l = min(p_l, λ)``, ``λ`` the largest level with ``Σ d_l ≤ dim``.

    Example:
        >>> allocate([10, 1000, 5000], 1000)
        [10, 495, 495]
    """
    level, left = dim, len(sizes)
    for size in sorted(sizes):  # small tensors take their size, the rest share what is left
        if size * left > level:
            break
        level, left = level - size, left - 1
    share = level // max(left, 1)
    return [min(size, share) for size in sizes] if left else list(sizes)


def plan_projection(
    projection, model: nn.Module, layout, scale: torch.Tensor | None, like: torch.Tensor
) -> dict[str, CountSketch | KroneckerProjection]:
    """The block of ``S`` for each selected tensor, in ``layout`` order (see :mod:`.projection`).

    Args:
        projection: a :class:`~symcoherence.coherence.Projection` (its ``dim`` and ``seed``).
        model: the module (which layer owns each weight).
        layout: the :class:`~symcoherence.coherence.gradients.layout.ParameterLayout` of the
            selected parameters.
        scale: ``diag(M)^{-1/2}`` ``(P,)`` in ``layout``, or ``None`` for ``M = I``.
        like: dtype and device of the factors.

    Raises:
        ValueError: if ``dim`` is smaller than the number of selected tensors.
    """
    if projection.dim < len(layout.names):
        raise ValueError(
            f"Projection(dim={projection.dim}) cannot give each of the {len(layout.names)} "
            "selected parameter tensors a dimension; use a larger dim (the default is "
            f"{DEFAULT_DIM})"
        )
    generator = torch.Generator().manual_seed(projection.seed)
    dims = allocate([layout.sizes[n] for n in layout.names], projection.dim)
    tied = set(tied_aliases(model).values())
    plans: dict[str, CountSketch | KroneckerProjection] = {}
    for name, dim in zip(layout.names, dims, strict=True):
        part = None if scale is None else scale[layout.slices[name]]
        module = kronecker_module(model, name, tied) if dim < layout.sizes[name] else None
        ranks = None if module is None else kronecker_ranks(dim, *_matrix_shape(module.weight))
        if ranks is None:
            plans[name] = CountSketch(layout.sizes[name], dim, part, generator, like)
        else:
            key = name.replace(".", "/")  # ParameterDict keys cannot hold dots
            plans[name] = KroneckerProjection(module, key, ranks, part, generator, like)
    return plans


def _matrix_shape(weight: torch.Tensor) -> tuple[int, int]:
    """``(n_out, m)``: a weight as a matrix, from its (global, for a ``DTensor``) shape."""
    return weight.shape[0], math.prod(weight.shape[1:])


class Reparametrized(nn.Module):
    """``model`` with a zero parameter ``Z`` per Kronecker-projected layer (see the module docs)."""

    def __init__(self, model: nn.Module, shapes: dict[str, tuple[int, int]], like: torch.Tensor):
        super().__init__()
        self.model = model
        self.kronecker = nn.ParameterDict(
            {key: nn.Parameter(like.new_zeros(shape)) for key, shape in shapes.items()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)`` (the Kronecker terms enter through forward hooks)."""
        return self.model(x)
