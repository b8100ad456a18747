r"""One real vector for a dict of parameters: the flat layout of per-sample gradients.

A real parameter of shape ``s`` takes ``prod(s)`` entries of the vector, a complex one
``2·prod(s)`` (real and imaginary parts interleaved), so that the flat inner product is the real
Euclidean one, ``⟨b, a⟩ = Σ Re(b̄ a)``.

Example:
    >>> import torch
    >>> layout = ParameterLayout({"w": torch.zeros(2, 3), "z": torch.zeros(2, dtype=torch.cfloat)})
    >>> layout.size, layout.slices["z"]
    (10, slice(6, 10, None))
    >>> flat = torch.arange(20.0).reshape(2, 10)
    >>> layout.unflatten(flat)["z"][1]
    tensor([16.+17.j, 18.+19.j])
    >>> torch.equal(layout.flatten(layout.unflatten(flat)), flat)
    True
"""

from __future__ import annotations

import torch


class ParameterLayout:
    """Flattening of a parameter dict into one real vector of length ``P`` (and back).

    A real parameter of shape ``s`` takes ``prod(s)`` entries; a complex one takes ``2·prod(s)``
    (real and imaginary parts interleaved, as ``torch.view_as_real``).
    """

    def __init__(self, params: dict[str, torch.Tensor]):
        self.names = tuple(params)
        self.shapes = {name: p.shape for name, p in params.items()}
        self.complex = {name: p.is_complex() for name, p in params.items()}
        self.sizes = {name: p.numel() * (2 if p.is_complex() else 1) for name, p in params.items()}
        offsets = [0, *torch.tensor(list(self.sizes.values())).cumsum(0).tolist()]
        self.slices = {
            name: slice(start, stop)
            for name, start, stop in zip(self.names, offsets[:-1], offsets[1:], strict=True)
        }
        self.size = offsets[-1]

    def flatten(self, tensors: dict[str, torch.Tensor], batch_dims: int = 1) -> torch.Tensor:
        """``{name: (*batch, *shape)}`` -> ``(*batch, P)`` real."""
        parts = []
        for name in self.names:
            value = tensors[name]
            if self.complex[name]:
                value = torch.view_as_real(value)
            parts.append(value.reshape(*value.shape[:batch_dims], -1))
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(*batch, P)`` real -> ``{name: (*batch, *shape)}`` (complex where the parameter is)."""
        batch = flat.shape[:-1]
        out = {}
        for name in self.names:
            piece = flat[..., self.slices[name]]
            if self.complex[name]:
                piece = torch.view_as_complex(piece.reshape(*batch, *self.shapes[name], 2))
            else:
                piece = piece.reshape(*batch, *self.shapes[name])
            out[name] = piece
        return out


__all__ = ["ParameterLayout"]
