r"""SFNO: torch-harmonics' spherical Fourier neural operator as a symcoherence backbone.

:class:`SFNO` wraps ``torch_harmonics.examples.models.SphericalFourierNeuralOperator`` as a plain
``nn.Module`` ``(B, C_in, nlat, nlon) -> (B, C_out, nlat, nlon)`` that
:class:`~symcoherence.models.EmulatorModule` trains unchanged and that works under
``torch.func.functional_call`` with ``vmap(grad(...))``, ``jvp`` and ``vmap(jvp)``.

Architecture (torch-harmonics): a pointwise encoder on the input grid, ``num_layers`` blocks
``x ↦ MLP(ISHT(W_l · SHT(x))) + ISHT(SHT(x))`` and a pointwise decoder. The first block maps the
input grid to an internal Legendre–Gauss grid of ``h × w`` points,
``h = (nlat − 1) // scale_factor + 1``, ``w = nlon // scale_factor``; the last block maps back.
Spectral weights ``W_l`` depend on the degree ``l`` only, so the spectral part commutes with every
rotation about the polar axis.

**Which zonal shifts are exact.** A roll of the input by ``k`` longitude cells rotates every
intermediate field by the angle ``2πk / nlon``. Pointwise layers on the input grid commute with any
roll, but the MLPs of the inner blocks act on the ``w`` internal longitudes, which that rotation maps
onto themselves only when ``k w / nlon`` is an integer. Hence, without a positional embedding,
``f(roll(x, k)) = roll(f(x), k)`` to float32 round-off exactly for the multiples of
:attr:`SFNO.zonal_stride` ``= nlon / gcd(nlon, w)`` (``= scale_factor`` when it divides ``nlon``),
and for every ``k`` when ``num_layers = 1`` (no inner block); other shifts break equivariance by
aliasing of the nonlinearity. A positional embedding depending on longitude (``"spectral"``,
``"sequence"``) breaks every non-trivial shift; ``"learnable lat"`` keeps them (it depends on
latitude only); ``"learnable latlon"`` starts at zero and breaks them as it trains. The equatorial
mirror commutes with the network only when every channel is a scalar: the network has no notion of
pseudoscalars or of the sign of ``v``, so the physical mirror of shallow water is not built in.

Function transforms: torch-harmonics 0.9.3 routes its FFTs through ``_EnsureContiguous``, a
``torch.autograd.Function`` that declares neither a vmap rule nor a forward-mode derivative, so
``vmap`` and ``jvp`` refuse it. Its forward is a copy into contiguous memory (the identity on
values), so the generated vmap rule and the jvp ``t ↦ contiguous(t)`` are exact; :class:`SFNO`
adds both once if they are missing. Its spectral weights are complex parameters, which per-sample
gradient flattening and the optimizer-state metrics do not expect; :class:`SFNO` stores each as a
real pair ``(real, imag)`` through ``torch.nn.utils.parametrize``.

Example:
    >>> import torch
    >>> from symcoherence.models.sfno import SFNO
    >>> model = SFNO(3, 3, nlat=9, nlon=16, scale_factor=2, embed_dim=4, num_layers=2)
    >>> model(torch.randn(2, 3, 9, 16)).shape
    torch.Size([2, 3, 9, 16])
    >>> model.zonal_stride
    2
"""

from __future__ import annotations

import math

import torch
from torch import nn

from symcoherence.models.base import Backbone, resolve_preset

PRESETS = {
    "small": {"scale_factor": 2, "embed_dim": 16, "num_layers": 4},
    "paper": {"scale_factor": 3, "embed_dim": 256, "num_layers": 4},
}
POSITIONAL_EMBEDDINGS = ("none", "sequence", "spectral", "learnable lat", "learnable latlon")
_ZONAL_EMBEDDINGS = ("none", "learnable lat")  # embeddings that commute with every zonal shift
_GRIDS = ("equiangular", "legendre-gauss", "lobatto")


def _enable_function_transforms() -> None:
    """Give torch-harmonics' contiguity ``autograd.Function`` a vmap rule and a jvp (exact; once)."""
    from torch_harmonics import utils

    function = getattr(utils, "_EnsureContiguous", None)
    if function is None:
        return
    if not getattr(function, "generate_vmap_rule", False):
        function.generate_vmap_rule = True
    if function.jvp is torch.autograd.Function.jvp:
        function.jvp = staticmethod(lambda ctx, tangent: utils._contiguous(tangent))


class _RealPair(nn.Module):
    """Parametrize a complex weight by two real tensors: ``W = real + i·imag``."""

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return torch.complex(real, imag)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight.real.clone(), weight.imag.clone()


def _positional_embedding(value: bool | str) -> str:
    if value is False:
        return "none"
    if value is True:
        return "spectral"
    if value not in POSITIONAL_EMBEDDINGS:
        raise ValueError(
            f"positional_embedding must be False, True (= 'spectral') or one of "
            f"{list(POSITIONAL_EMBEDDINGS)}; got {value!r}"
        )
    return value


class SFNO(Backbone):
    r"""Spherical Fourier neural operator on an ``nlat × nlon`` grid, ``(B, C_in, nlat, nlon)`` → same.

    Equivariance:
        Without a longitude-dependent positional embedding: exactly equivariant (to float32
        round-off) under the zonal shifts by multiples of :attr:`zonal_stride` cells, i.e.
        ``ZonalShifts(nlon, stride=model.zonal_stride)``; other shifts are broken by the
        nonlinearity on the coarser internal grid. Equivariant under the equatorial flip only for
        all-scalar channels (never with the sign rules of vorticity or northward wind).

    Presets (``preset=``; explicit arguments override them):

    * ``"small"`` — ``scale_factor=2``, ``embed_dim=16``, ``num_layers=4`` (CPU experiments).
    * ``"paper"`` — ``scale_factor=3``, ``embed_dim=256``, ``num_layers=4``: the defaults of
      torch-harmonics' ``SphericalFourierNeuralOperator``.

    Args:
        in_channels: input channels ``C_in`` (e.g. 3 for ``(u, v, h)``).
        out_channels: output channels ``C_out``.
        preset: ``"small"`` or ``"paper"``; supplies every argument left at ``None``.
        nlat: latitudes of the input grid (index 0 at the north pole).
        nlon: longitudes of the input grid.
        scale_factor: down-sampling of the internal grid, ``h = (nlat − 1) // s + 1``,
            ``w = nlon // s``.
        embed_dim: channels of the hidden layers.
        num_layers: number of SFNO blocks.
        positional_embedding: ``False`` (none, the default), ``True`` (``"spectral"``) or one of
            ``"none"``, ``"sequence"``, ``"spectral"``, ``"learnable lat"``, ``"learnable latlon"``.
        grid: input grid, ``"equiangular"`` (the shallow-water data), ``"legendre-gauss"`` or
            ``"lobatto"``.
        grid_internal: grid of the inner blocks.
        mlp_ratio: hidden width of the block MLPs relative to ``embed_dim``.
        activation: ``"gelu"``, ``"relu"`` or ``"identity"``.
        residual_prediction: add the input to the output (needs ``in_channels == out_channels``).
        hard_thresholding_fraction: fraction of the internal spectral modes kept.

    Raises:
        ValueError: for non-positive sizes, an unknown grid, activation or embedding, or an
            internal grid too small to hold a single spectral mode.

    Computations run in float32 (torch-harmonics casts the spectral layers to float32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        preset: str = "small",
        nlat: int = 32,
        nlon: int = 64,
        scale_factor: int | None = None,
        embed_dim: int | None = None,
        num_layers: int | None = None,
        positional_embedding: bool | str = False,
        grid: str = "equiangular",
        grid_internal: str = "legendre-gauss",
        mlp_ratio: float = 2.0,
        activation: str = "gelu",
        residual_prediction: bool = False,
        hard_thresholding_fraction: float = 1.0,
    ):
        super().__init__()
        config = resolve_preset(
            "SFNO",
            PRESETS,
            preset,
            {"scale_factor": scale_factor, "embed_dim": embed_dim, "num_layers": num_layers},
        )
        scale_factor, embed_dim, num_layers = (
            config["scale_factor"],
            config["embed_dim"],
            config["num_layers"],
        )
        for label, value in (
            ("nlat", nlat),
            ("nlon", nlon),
            ("scale_factor", scale_factor),
            ("embed_dim", embed_dim),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        for label, value in (("grid", grid), ("grid_internal", grid_internal)):
            if value not in _GRIDS:
                raise ValueError(f"{label} must be one of {list(_GRIDS)}, got {value!r}")
        if activation not in ("gelu", "relu", "identity"):
            raise ValueError(f"activation must be 'gelu', 'relu' or 'identity', got {activation!r}")
        if residual_prediction and in_channels != out_channels:
            raise ValueError(
                f"residual_prediction adds the input to the output and needs in_channels == "
                f"out_channels; got {in_channels} and {out_channels}"
            )
        embedding = _positional_embedding(positional_embedding)
        self._record(
            in_channels=in_channels,
            out_channels=out_channels,
            preset=preset,
            nlat=nlat,
            nlon=nlon,
            positional_embedding=positional_embedding,
            grid=grid,
            grid_internal=grid_internal,
            mlp_ratio=mlp_ratio,
            activation=activation,
            residual_prediction=residual_prediction,
            hard_thresholding_fraction=hard_thresholding_fraction,
            **config,
        )
        height, width = (nlat - 1) // scale_factor + 1, nlon // scale_factor
        modes = int(min(height, width // 2) * hard_thresholding_fraction)
        if modes < 1:
            raise ValueError(
                f"the internal grid of {height}×{width} points (nlat={nlat}, nlon={nlon}, "
                f"scale_factor={scale_factor}, hard_thresholding_fraction="
                f"{hard_thresholding_fraction}) holds no spectral mode; use a smaller scale_factor "
                "or a larger grid (nlon >= 2 * scale_factor)"
            )
        _enable_function_transforms()
        from torch_harmonics.examples.models.sfno import SphericalFourierNeuralOperator

        self.network = SphericalFourierNeuralOperator(
            img_size=(nlat, nlon),
            grid=grid,
            grid_internal=grid_internal,
            scale_factor=scale_factor,
            in_chans=in_channels,
            out_chans=out_channels,
            embed_dim=embed_dim,
            num_layers=num_layers,
            activation_function=activation,
            mlp_ratio=mlp_ratio,
            hard_thresholding_fraction=hard_thresholding_fraction,
            residual_prediction=residual_prediction,
            pos_embed=embedding,
        )
        for module in self.network.modules():
            weight = module._parameters.get("weight")
            if weight is not None and weight.is_complex():
                nn.utils.parametrize.register_parametrization(module, "weight", _RealPair())
        self.nlat = nlat
        self.nlon = nlon
        self.scale_factor = scale_factor
        self.num_layers = num_layers
        self.positional_embedding = embedding
        self.internal_shape = (height, width)

    @property
    def zonal_stride(self) -> int | None:
        """Smallest zonal shift (in cells) whose multiples the model commutes with exactly.

        ``nlon / gcd(nlon, w)`` for the internal width ``w`` (``1`` with a single block), or
        ``None`` when a longitude-dependent positional embedding breaks every shift.
        """
        if self.positional_embedding not in _ZONAL_EMBEDDINGS:
            return None
        if self.num_layers == 1:
            return 1
        return self.nlon // math.gcd(self.nlon, self.internal_shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` ``(B, C_in, nlat, nlon)`` to ``(B, C_out, nlat, nlon)``.

        Raises:
            ValueError: if ``x`` does not have that shape.
        """
        self._check_input(x)
        if tuple(x.shape[-2:]) != (self.nlat, self.nlon):
            raise ValueError(
                f"SFNO was built for an nlat×nlon = {self.nlat}×{self.nlon} grid but the input "
                f"is {x.shape[-2]}×{x.shape[-1]} (shape {tuple(x.shape)}); build it with "
                f"nlat={x.shape[-2]}, nlon={x.shape[-1]}"
            )
        return self.network(x)
