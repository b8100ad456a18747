r"""Kronecker-factored blocks of the Gauss–Newton (NTK) metric, fitted from the layer hooks.

The metric is ``η = s Σ_n J_nᵀ J_n`` (``s = 1/F``: the NTK metric ``JᵀJ/F``, not the Gauss–Newton
matrix of the scaled loss). Backpropagating random output vectors ``v`` with ``E[v vᵀ] = s I``
(Rademacher times ``√s``) gives *pseudo-gradients* ``g = J_nᵀ v`` with ``E[g gᵀ] = J_nᵀ J_n s``,
so that ``η̂ = Σ_{n,k} w_k g_{n,k} g_{n,k}ᵀ`` (``w_k = 1/S`` for ``S`` vectors per sample) is an
unbiased estimate of ``η`` — never the real loss gradients, whose outer products (the empirical
Fisher) have rank ``N``. ``η̂`` is approximated block-diagonally, one block per layer:

* **Linear and Conv2d** (``y_t = W u_t + b`` at positions ``t``; ``u_t`` the input, or the
  ``k×k`` patch padded as the layer pads — ``"circular"`` included — with a trailing 1 for the
  bias): with ``δ_t`` the backpropagated vector at position ``t``,

  .. math::

      η_W ≈ A ⊗ G, \quad A = \frac{1}{T} \sum_{n,t} u_{n,t} u_{n,t}^T, \quad
      G = \sum_{n,k,t} w_k δ_{n,k,t} δ_{n,k,t}^T,

  ``T`` the number of ``(n, t)`` pairs (K-FAC; exact for one sample at one position). A layer
  applied at more than ``FACTOR_POSITIONS`` positions per sample accumulates ``A`` at that many
  seeded random positions (the same for every sample of a fitting batch): the mean stays
  unbiased, and under EK-FAC ``A`` only chooses the eigenbasis, in which ``Λ`` below is fitted
  from the full pseudo-gradients, so ``Λ = diag(Qᵀ η̂ Q)`` and the trace stay exact. On the
  64² U-Net preset the full ``A`` took half of the fit (``(n·T)·(C·k²)²`` products). With
  ``A = Q_A diag(a) Q_Aᵀ`` and ``G = Q_G diag(γ) Q_Gᵀ``, K-FAC's eigenvalues in the Kronecker
  eigenbasis are ``γ_o a_i``; the eigenvalue correction (EK-FAC) replaces them by the
  Frobenius-best diagonal there, ``Λ_{oi} = Σ_{n,k} w_k (Q_Gᵀ DW_{n,k} Q_A)_{oi}²`` with
  ``DW_{n,k}`` the position-summed per-sample pseudo-gradient: ``Λ = diag(Qᵀ η̂ Q)``, hence
  ``tr(EK-FAC) = tr(η̂)``.
* **Every other covered layer** (GroupNorm, LayerNorm, eval BatchNorm affine parameters, layers with
  registered rules): the dense block of ``η̂`` itself, or, for a layer type registered with
  :func:`register_curvature_blocks`, dense blocks over independent slices of its weight (for the
  FNO's spectral convolution: one dense ``(C_in·C_out·2)²`` block per retained mode, in real
  coordinates, so the real zero and Nyquist modes need no special case).

A layer whose dense block would exceed ``MAX_DENSE`` parameters, or a model the hooks do not
cover, is refused with an error naming ``solver="cg"``.

Example:
    >>> import torch
    >>> from symcoherence.coherence.gradients import FunctionalModel
    >>> net = torch.nn.Linear(3, 2)
    >>> curvature = fit_curvature(FunctionalModel(net), [torch.randn(1, 3)], scale=0.5,
    ...                           vectors=None)
    >>> curvature.layers, round(curvature.trace, 6) == round(float(curvature.dense().trace()), 6)
    (1, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from symcoherence.coherence.gradients.functional import FunctionalModel
from symcoherence.coherence.gradients.layer_hooks import RULES, LayerGradients, _conv_padding

MAX_DENSE = 4096  # largest dense block (parameters) a layer without Kronecker factors may take
FIT_SAMPLES = 32  # samples per batched forward + backward while fitting
FACTOR_POSITIONS = 256  # positions per sample at which the input factor A is accumulated
CURVATURE_BLOCKS: dict[type[nn.Module], tuple[int, ...]] = {}


def register_curvature_blocks(layer_type: type[nn.Module], block_axes: tuple[int, ...]) -> None:
    """Declare that slices of a layer's ``weight`` along ``block_axes`` are independent blocks.

    Each slice (the other axes flattened) gets its own dense block of ``η̂``; e.g. for the FNO's
    spectral weight ``(2, C_in, C_out, m, m, 2)`` the axes ``(0, 3, 4)`` give one block per mode.

    Args:
        layer_type: the exact module class (it needs a layer-hook rule).
        block_axes: axes of ``weight`` that index the blocks.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"layer_type must be an nn.Module subclass, got {layer_type!r}")
    if not all(isinstance(axis, int) and axis >= 0 for axis in block_axes):
        raise ValueError(f"block_axes must be non-negative integers, got {block_axes!r}")
    CURVATURE_BLOCKS[layer_type] = tuple(block_axes)


def conv_patches(
    module: nn.Conv2d, x: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """``(n, C_in·k_h·k_w, T)`` input patches ``u_t``, padded as the layer pads (``padding_mode``).

    ``Σ_t δ_t u_tᵀ`` is then the convolution's weight gradient ``(C_out, C_in·k_h·k_w)``. With
    ``positions`` (flat output positions ``t``), only the patches there, in that order.
    """
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    widths = _conv_padding(module)
    padded = F.pad(x, widths, mode=mode) if any(widths) else x
    if positions is None:
        return F.unfold(padded, module.kernel_size, dilation=module.dilation, stride=module.stride)
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    width = (padded.shape[-1] - dw * (kw - 1) - 1) // sw + 1
    rows, cols = positions // width * sh, positions % width * sw
    ky, kx = torch.meshgrid(
        torch.arange(kh, device=x.device) * dh,
        torch.arange(kw, device=x.device) * dw,
        indexing="ij",
    )
    flat = (rows + ky.reshape(-1, 1)) * padded.shape[-1] + cols + kx.reshape(-1, 1)  # (k², T')
    picked = padded.flatten(2)[:, :, flat.reshape(-1)]  # (n, C, k²·T')
    return picked.reshape(x.shape[0], -1, positions.numel())


def refusal(reason: str) -> ValueError:
    """The error for a model the Kronecker-factored metric cannot cover."""
    return ValueError(
        f"the Kronecker-factored Gauss–Newton metric (solver='ekfac' or preconditioner='ekfac') "
        f"cannot cover this model: {reason}; use solver='cg' (the exact reference), or register "
        "a layer-hook rule (and curvature blocks) for the layer"
    )


@dataclass
class KroneckerLayer:
    """A Linear or Conv2d layer: ``[W | b]`` as ``(out, in')``, its factors and eigenvalues."""

    module: nn.Module
    columns: torch.Tensor  # (out, in') indices into the flat P vector
    bias: bool
    a: torch.Tensor
    g: torch.Tensor
    positions: int = 0
    qa: torch.Tensor | None = None
    qg: torch.Tensor | None = None
    kfac: torch.Tensor | None = None  # (out, in') K-FAC eigenvalues γ_o a_i
    eigenvalues: torch.Tensor | None = None  # (out, in') in use (EK-FAC's Λ or K-FAC's)

    def inputs(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, in', T)``: what the weight multiplies at each position (bias: a trailing 1).

        With ``positions`` (flat indices of output positions), only those.
        """
        if isinstance(self.module, nn.Conv2d):
            u = conv_patches(self.module, x, positions)
        else:
            u = x.reshape(x.shape[0], -1, x.shape[-1])
            u = (u if positions is None else u[:, positions]).transpose(1, 2)
        if self.bias:
            u = torch.cat([u, u.new_ones(u.shape[0], 1, u.shape[2])], dim=1)
        return u

    def observe(
        self,
        x: torch.Tensor,
        delta: torch.Tensor,
        weight: float,
        first: bool,
        generator: torch.Generator,
    ) -> None:
        """Add one call's ``u uᵀ`` (once per input) and ``w δ δᵀ`` to the factors.

        ``u uᵀ`` at ``FACTOR_POSITIONS`` random positions per sample when there are more.
        """
        if isinstance(self.module, nn.Conv2d):
            d = delta.reshape(delta.shape[0], delta.shape[1], -1)
        else:
            d = delta.reshape(delta.shape[0], -1, delta.shape[-1]).transpose(1, 2)
        self.g += weight * torch.bmm(d, d.transpose(1, 2)).sum(0).to(self.g.dtype)
        if first:
            count = d.shape[2]
            positions = None
            if count > FACTOR_POSITIONS:
                positions = torch.randperm(count, generator=generator)[:FACTOR_POSITIONS]
                positions = positions.to(x.device)
            u = self.inputs(x, positions)
            self.a += torch.bmm(u, u.transpose(1, 2)).sum(0).to(self.a.dtype)
            self.positions += u.shape[0] * u.shape[2]


@dataclass
class DenseBlocks:
    """Dense blocks of ``η̂`` over ``columns`` ``(B, d)`` (``B`` independent blocks of size ``d``)."""

    columns: torch.Tensor
    matrix: torch.Tensor  # (B, d, d)
    basis: torch.Tensor | None = None
    eigenvalues: torch.Tensor | None = None


@dataclass
class KroneckerCurvature:
    """The fitted block-diagonal approximation of ``η`` (see the module docstring).

    Attributes:
        kronecker: the Linear / Conv2d layers with their factors.
        blocks: the dense blocks.
        size: ``P``.
        trace: ``tr(η̂) = Σ w ‖g‖²`` (the EK-FAC trace), from the pseudo-gradients.
        correction: whether the eigenvalues are EK-FAC's ``Λ`` (else K-FAC's ``γ ⊗ a``).
        fit_bytes: bytes of the stored pseudo-gradients and factors at the peak of the fit.
        passes: batched forward + backward passes of the fit.
    """

    kronecker: list[KroneckerLayer]
    blocks: list[DenseBlocks]
    size: int
    trace: float = 0.0
    correction: bool = True
    fit_bytes: int = 0
    passes: int = 0
    stored: list[tuple[torch.Tensor, float]] = field(default_factory=list, repr=False)

    @property
    def layers(self) -> int:
        """Number of Kronecker-factored layers."""
        return len(self.kronecker)

    def solve(self, rows: torch.Tensor, damping: float) -> torch.Tensor:
        """``(η̃ + λI)⁻¹ v`` for rows ``(c, P)``, ``η̃`` the fitted approximation.

        In the rows' precision: the float64 eigenbases are rounded to it, which for float32 rows
        changes the result by about their own rounding and halves the time on a CPU.
        """
        out = torch.empty_like(rows)
        for layer in self.kronecker:
            qa, qg = layer.qa.to(rows.dtype), layer.qg.to(rows.dtype)
            scale = (layer.eigenvalues + damping).reciprocal().to(rows.dtype)
            rotated = qg.T @ rows[:, layer.columns] @ qa  # (c, out, in')
            out[:, layer.columns] = qg @ (rotated * scale) @ qa.T
        for block in self.blocks:
            basis = block.basis.to(rows.dtype)
            scale = (block.eigenvalues + damping).reciprocal().to(rows.dtype)
            rotated = torch.einsum("cbi,bij->cbj", rows[:, block.columns], basis) * scale
            out[:, block.columns] = torch.einsum("cbj,bij->cbi", rotated, basis)
        return out

    def dense(self) -> torch.Tensor:
        """The approximation as a dense ``(P, P)`` matrix (for tests on tiny models)."""
        dtype = self.kronecker[0].a.dtype if self.kronecker else self.blocks[0].matrix.dtype
        full = torch.zeros(self.size, self.size, dtype=dtype)
        for layer in self.kronecker:
            q = torch.kron(layer.qg, layer.qa)
            index = layer.columns.reshape(-1)
            full[index[:, None], index] = q @ torch.diag(layer.eigenvalues.reshape(-1)) @ q.T
        for block in self.blocks:
            for columns, matrix in zip(block.columns, block.matrix, strict=True):
                full[columns[:, None], columns] = matrix
        return full


def _indices(fmodel: FunctionalModel, name: str) -> torch.Tensor:
    where = fmodel.layout.slices[name]
    return torch.arange(where.start, where.stop).reshape(fmodel.layout.shapes[name])


def _plan(fmodel: FunctionalModel, hooks: LayerGradients, dtype: torch.dtype) -> KroneckerCurvature:
    """One Kronecker layer or dense blocks per covered module, covering all ``P`` columns."""
    kronecker: list[KroneckerLayer] = []
    dense: list[DenseBlocks] = []
    for module, names in hooks.modules.items():
        kind = type(module)
        if (
            kind in (nn.Linear, nn.Conv2d)
            and "weight" in names
            and getattr(module, "groups", 1) == 1
        ):
            weight = _indices(fmodel, names["weight"]).reshape(module.weight.shape[0], -1)
            bias = "bias" in names
            if bias:
                weight = torch.cat([weight, _indices(fmodel, names["bias"])[:, None]], dim=1)
            out, width = weight.shape
            kronecker.append(
                KroneckerLayer(
                    module,
                    weight,
                    bias,
                    torch.zeros(width, width, dtype=dtype),
                    torch.zeros(out, out, dtype=dtype),
                )
            )
            continue
        pieces = []
        for local, name in names.items():
            axes = CURVATURE_BLOCKS.get(kind) if local == "weight" else None
            index = _indices(fmodel, name)
            if axes is not None:
                rest = [axis for axis in range(index.dim()) if axis not in axes]
                index = index.permute(*axes, *rest).reshape(
                    math.prod(index.shape[a] for a in axes), -1
                )
                dense.append(
                    DenseBlocks(index, torch.zeros(*index.shape, index.shape[1], dtype=dtype))
                )
            else:
                pieces.append(index.reshape(-1))
        if pieces:
            columns = torch.cat(pieces)[None]
            if columns.shape[1] > MAX_DENSE:
                raise refusal(
                    f"{kind.__name__} has {columns.shape[1]} parameters without Kronecker factors "
                    f"(a dense block holds at most {MAX_DENSE}; register_curvature_blocks splits one)"
                )
            dense.append(
                DenseBlocks(
                    columns, torch.zeros(1, columns.shape[1], columns.shape[1], dtype=dtype)
                )
            )
    covered = sum(layer.columns.numel() for layer in kronecker)
    covered += sum(block.columns.numel() for block in dense)
    if covered != fmodel.layout.size:
        raise refusal(f"the layers cover {covered} of {fmodel.layout.size} parameters")
    return KroneckerCurvature(kronecker, dense, fmodel.layout.size)


def _cotangents(
    shape: torch.Size,
    scale: float,
    vectors: int | None,
    generator: torch.Generator | None,
    like: torch.Tensor,
) -> Iterator[tuple[torch.Tensor, float]]:
    """``(v, w)``: ``vectors`` Rademacher ``±√s`` with ``w = 1/S``, or (``None``) the ``√s e_j``, ``w = 1``."""
    if vectors is None:
        size = math.prod(shape[1:])
        for j in range(size):
            v = like.new_zeros(shape[0], size)
            v[:, j] = math.sqrt(scale)
            yield v.reshape(shape), 1.0
        return
    for _ in range(vectors):
        signs = torch.randint(0, 2, tuple(shape), generator=generator, device=like.device)
        yield (2.0 * signs - 1.0).to(like.dtype) * math.sqrt(scale), 1.0 / vectors


def fit_curvature(
    fmodel: FunctionalModel,
    batches: list[torch.Tensor],
    scale: float,
    vectors: int | None,
    generator: torch.Generator | None = None,
    correction: bool = True,
) -> KroneckerCurvature:
    """Fit the factors (and EK-FAC's ``Λ``) of ``η = scale · Σ_batches Σ_n J_nᵀ J_n``.

    Args:
        fmodel: the functional model (its layer hooks must cover every selected parameter).
        batches: input batches ``(B, C, H, W)`` whose Jacobians make ``η``.
        scale: ``s`` with ``E[v vᵀ] = s I`` (``1/F`` of all the batches' outputs together).
        vectors: random vectors per sample ``S``, or ``None`` for every output unit vector (``η̂ = η``
            exactly; one pass per output, for tests on tiny models).
        generator: seeds the Rademacher vectors.
        correction: fit EK-FAC's eigenvalues (else keep K-FAC's).

    Raises:
        ValueError: if the hooks do not cover the model (see :func:`refusal`).
    """
    hooks = LayerGradients.covering(fmodel.model, fmodel.params)
    if hooks is None:
        uncovered = sorted(
            {
                type(m).__name__
                for m in fmodel.model.modules()
                if type(m) not in RULES and any(True for _ in m.parameters(recurse=False))
            }
        )
        raise refusal(
            f"parameters outside the layers the hooks cover (layer types {uncovered or 'tied or complex weights'})"
        )
    if fmodel.engine != "layers":
        raise refusal("the layer hooks did not reproduce plain autograd on it")
    dtype = torch.float64
    curvature = _plan(fmodel, hooks, dtype)
    curvature.correction = correction
    by_module = {layer.module: layer for layer in curvature.kronecker}
    state = {"weight": 1.0, "first": True}
    positions = torch.Generator().manual_seed(0)  # where A is accumulated (FACTOR_POSITIONS)

    def observe(module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> None:
        layer = by_module.get(module)
        if layer is not None:
            layer.observe(x, delta, state["weight"], state["first"], positions)

    keep = correction and bool(curvature.kronecker)
    trace, stored_bytes = 0.0, 0
    with torch.enable_grad():
        for batch in batches:
            for start in range(0, batch.shape[0], FIT_SAMPLES):
                inputs = batch[start : start + FIT_SAMPLES]
                with torch.no_grad():
                    shape = fmodel(fmodel.params, inputs[:1]).shape[1:]
                state["first"] = True
                for v, w in _cotangents(
                    torch.Size([inputs.shape[0], *shape]), scale, vectors, generator, inputs
                ):
                    state["weight"] = w
                    flat = inputs.new_empty(inputs.shape[0], fmodel.layout.size, dtype=fmodel.dtype)
                    hooks(
                        lambda x: fmodel(fmodel.params, x),
                        lambda p, t: (p * t).sum(),
                        inputs,
                        v,
                        out=fmodel.layout.unflatten(flat),
                        observe=observe,
                    )
                    curvature.passes += 1
                    state["first"] = False
                    trace += w * float(flat.double().pow(2).sum())
                    for block in curvature.blocks:
                        part = flat[:, block.columns].double()
                        block.matrix += w * torch.einsum("nbi,nbj->bij", part, part)
                    if keep:
                        curvature.stored.append((flat, w))
                        stored_bytes += flat.numel() * flat.element_size()
    curvature.trace = trace
    factor_bytes = sum(
        8 * (layer.a.numel() + layer.g.numel() + layer.columns.numel())
        for layer in curvature.kronecker
    )
    factor_bytes += sum(8 * block.matrix.numel() for block in curvature.blocks)
    curvature.fit_bytes = stored_bytes + 2 * factor_bytes
    _finish(curvature)
    return curvature


def _finish(curvature: KroneckerCurvature) -> None:
    """Eigendecompose the factors and blocks; fit ``Λ`` from the stored pseudo-gradients."""
    for layer in curvature.kronecker:
        ea, layer.qa = torch.linalg.eigh(layer.a / max(layer.positions, 1))
        eg, layer.qg = torch.linalg.eigh(layer.g)
        layer.kfac = eg.clamp_min(0)[:, None] * ea.clamp_min(0)[None, :]
        layer.eigenvalues = layer.kfac
        if curvature.correction:
            fitted = torch.zeros_like(layer.kfac)
            for flat, w in curvature.stored:
                rotated = layer.qg.T @ flat[:, layer.columns].double() @ layer.qa
                fitted += w * rotated.pow(2).sum(0)
            layer.eigenvalues = fitted
    curvature.stored.clear()
    for block in curvature.blocks:
        eigenvalues, block.basis = torch.linalg.eigh(block.matrix)
        block.eigenvalues = eigenvalues.clamp_min(0)


__all__ = [
    "CURVATURE_BLOCKS",
    "FACTOR_POSITIONS",
    "MAX_DENSE",
    "DenseBlocks",
    "KroneckerCurvature",
    "KroneckerLayer",
    "conv_patches",
    "fit_curvature",
    "register_curvature_blocks",
]
