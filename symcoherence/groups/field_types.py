"""Field types: how each channel of a gridded field transforms under a group element.

A group acts on a field as ``(g·f)(x) = ρ(g) f(g⁻¹ x)``: the grid moves *and* the channels are
acted on by a representation ``ρ``. The field type fixes ``ρ`` channel by channel:

* ``"scalar"`` (density, pressure, height, divergence): ``ρ(g) = 1``;
* ``"pseudoscalar"`` (vorticity in 2-D): ``ρ(g) = det M_g``, i.e. the sign flips under reflections;
* ``"vector"`` (velocity): two consecutive channels ``(u_x, u_y)`` with ``x`` the **last** array axis
  and ``y`` the second-to-last; ``ρ(g) = M_g``, the 2×2 linear part of the element;
* ``"tensor"`` (a rank-2 tensor: velocity gradient ``∂_j u_i``, strain rate, stress, conformation):
  four consecutive channels ``(T_xx, T_xy, T_yx, T_yy)`` (row-major, ``T_ij`` at channel
  ``2 i + j``) transforming as ``T ↦ M_g T M_gᵀ``, i.e. ``T'_ij = Σ_kl M_ik M_jl T_kl``. A symmetric
  tensor (strain rate, stress) is stored with all four components (``T_xy = T_yx``); the action
  keeps it symmetric.

Example:
    >>> from symcoherence.groups import FieldType
    >>> velocity_history = FieldType(["vector"]).repeat(2)
    >>> velocity_history.num_channels
    4
    >>> FieldType(["pseudoscalar", "scalar"])
    FieldType(['pseudoscalar', 'scalar'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

KINDS = ("scalar", "pseudoscalar", "vector", "tensor")
KIND_CHANNELS = {"scalar": 1, "pseudoscalar": 1, "vector": 2, "tensor": 4}
"""Channels each kind occupies."""
_WIDTH = KIND_CHANNELS


class FieldType:
    """The per-channel transformation law of a field with layout ``(..., C, H, W)``.

    Args:
        kinds: one entry per *field* (not per channel): ``"scalar"``, ``"pseudoscalar"``,
            ``"vector"`` or ``"tensor"``. A vector occupies two consecutive channels ``(x, y)``, a
            rank-2 tensor four, ``(xx, xy, yx, yy)``.

    Raises:
        TypeError: if ``kinds`` is a bare string instead of a sequence.
        ValueError: if a kind is unknown or the list is empty.
    """

    def __init__(self, kinds: Sequence[str]):
        if isinstance(kinds, str):
            raise TypeError(
                f"FieldType expects a list of kinds, got the string {kinds!r}; "
                f"write FieldType([{kinds!r}])"
            )
        kinds = tuple(kinds)
        if not kinds:
            raise ValueError("FieldType needs at least one kind, e.g. FieldType(['scalar'])")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown field kind(s) {unknown}; valid kinds are {list(KINDS)}")
        self.kinds: tuple[str, ...] = kinds

    @property
    def num_channels(self) -> int:
        """Number of array channels (a vector counts two, a tensor four)."""
        return sum(_WIDTH[k] for k in self.kinds)

    def repeat(self, times: int) -> FieldType:
        """Stack ``times`` copies along channels (a time history of ``times`` frames)."""
        if not isinstance(times, int) or times < 1:
            raise ValueError(f"repeat expects a positive integer, got {times!r}")
        return FieldType(self.kinds * times)

    def __add__(self, other: FieldType) -> FieldType:
        """Concatenate two field types along channels."""
        if not isinstance(other, FieldType):
            return NotImplemented
        return FieldType(self.kinds + other.kinds)

    def blocks(self) -> Iterator[tuple[str, int]]:
        """Yield ``(kind, first_channel)`` for every field in channel order."""
        channel = 0
        for kind in self.kinds:
            yield kind, channel
            channel += _WIDTH[kind]

    def channel_action(self, matrix: Sequence[Sequence[int]]) -> tuple[list[int], list[float]]:
        """Channel representation of a signed-permutation matrix as ``(source, sign)`` lists.

        For ``M`` a 2×2 signed permutation (an element of O(2) that maps the lattice to itself),
        output channel ``c`` equals ``sign[c] * input[source[c]]``: scalars are copied, pseudoscalars
        are multiplied by ``det M``, vectors ``(u_x, u_y)`` are mapped to ``M @ (u_x, u_y)`` and
        tensors to ``M T Mᵀ``: with ``M_ik = σ_i δ_{k π(i)}`` (one ``±1`` per row),
        ``(M T Mᵀ)_ij = σ_i σ_j T_{π(i) π(j)}``.

        Args:
            matrix: ``[[m_xx, m_xy], [m_yx, m_yy]]`` with exactly one ``±1`` per row and column.

        Returns:
            ``(source, sign)``, each of length ``num_channels``.
        """
        (a, b), (c, d) = matrix
        det = a * d - b * c
        # row i of M: its single nonzero column pi[i] and that entry's sign sigma[i]
        pi = [0 if row[0] != 0 else 1 for row in matrix]
        sigma = [float(row[pi[i]]) for i, row in enumerate(matrix)]
        source: list[int] = []
        sign: list[float] = []
        for kind, start in self.blocks():
            if kind == "scalar":
                source.append(start)
                sign.append(1.0)
            elif kind == "pseudoscalar":
                source.append(start)
                sign.append(float(det))
            elif kind == "vector":  # out_i = sigma_i u_{pi(i)}
                for i in range(2):
                    source.append(start + pi[i])
                    sign.append(sigma[i])
            else:  # tensor: out_ij = sigma_i sigma_j T_{pi(i) pi(j)}, channel 2 i + j
                for i in range(2):
                    for j in range(2):
                        source.append(start + 2 * pi[i] + pi[j])
                        sign.append(sigma[i] * sigma[j])
        return source, sign

    def check(self, field: torch.Tensor, name: str = "field") -> None:
        """Raise a clear ``ValueError`` unless ``field`` is ``(..., C, H, W)`` with matching ``C``."""
        if not isinstance(field, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(field).__name__}")
        if field.dim() < 3:
            raise ValueError(
                f"{name} must have layout (..., C, H, W) with C = {self.num_channels} for {self!r}; "
                f"got shape {tuple(field.shape)}"
            )
        channels = field.shape[-3]
        if channels != self.num_channels:
            hint = ""
            if channels % self.num_channels == 0 and channels > self.num_channels:
                hint = (
                    f"; a time history of {channels // self.num_channels} frames is "
                    f"{self!r}.repeat({channels // self.num_channels})"
                )
            raise ValueError(
                f"field type {self!r} has {self.num_channels} channels but {name} has {channels} "
                f"(shape {tuple(field.shape)}){hint}"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldType) and self.kinds == other.kinds

    def __hash__(self) -> int:
        return hash(self.kinds)

    def __repr__(self) -> str:
        return f"FieldType({list(self.kinds)!r})"

    def to_list(self) -> list[str]:
        """Plain list of kinds (for configs, checkpoints and HDF5 attributes)."""
        return list(self.kinds)

    @classmethod
    def coerce(cls, value: FieldType | Sequence[str], name: str = "field_type") -> FieldType:
        """``value`` as a :class:`FieldType`; a list of kinds (as configs write it) is converted.

        Raises:
            TypeError: naming ``name``, for anything else.

        Example:
            >>> FieldType.coerce(["vector"])
            FieldType(['vector'])
        """
        if isinstance(value, FieldType):
            return value
        if isinstance(value, (list, tuple)):
            return cls(value)
        raise TypeError(
            f"{name} must be a FieldType (e.g. FieldType(['pseudoscalar'])) or a list of kinds "
            f"such as ['vector'], got {value!r}"
        )
