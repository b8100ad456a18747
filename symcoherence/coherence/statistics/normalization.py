r"""Normalizations of the raw influence matrix ``H``.

* ``"standard"`` (the reference): each row ``H^g[n, :]`` divided by its standard deviation over the
  ket index ``m`` (diagonal included, unbiased estimator with ``N − 1``), so unstructured
  mini-batch noise has scale 1:
  ``Ĥ^g[n, m] = H^g[n, m] / std_m(H^g[n, :])``.
* ``"cosine"``: ``Ĥ^g[n, m] = H^g[n, m] / sqrt(B^g[n] · A[m])`` with ``B^g[n] = (b_n^g)ᵀ M⁻¹ b_n^g``
  and ``A[m] = a_mᵀ M⁻¹ a_m`` in the same metric; values lie in ``[−1, 1]``.
* ``"none"``: ``Ĥ = H``.

Degenerate rows: a row whose standard deviation is zero (``b_n^g = 0``, or every ket equal), and
an entry whose cosine denominator is zero (``b_n^g = 0`` or ``a_m = 0``), normalize to ``NaN``:
no normalized value exists there, and summaries skip such probes and count them (never a silent
``0``). No ``inf`` is produced from finite inputs.

Example:
    >>> import torch
    >>> from symcoherence.coherence.statistics.normalization import normalize
    >>> h = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])      # K = 1, N = 2; row 1 has no gradient
    >>> normalize(h, torch.ones(1, 2), torch.ones(2), "standard")
    tensor([[[0.7071, 2.1213],
             [   nan,    nan]]])
"""

from __future__ import annotations

import torch

NORMALIZATIONS = ("standard", "cosine", "none")


def check_normalization(kind: str, num_samples: int | None = None) -> None:
    """Raise ``ValueError`` for an unknown ``kind`` or ``standard`` with fewer than 2 samples."""
    if kind not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {kind!r}; expected one of {list(NORMALIZATIONS)}")
    if kind == "standard" and num_samples is not None and num_samples < 2:
        raise ValueError(
            f"normalization='standard' divides each row by its standard deviation over N probe "
            f"samples and needs N >= 2, got N = {num_samples}; pass more probes or "
            "normalization='cosine'"
        )


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, NaN where the denominator is not positive."""
    zero = ~(denominator > 0)
    return torch.where(
        zero,
        torch.full_like(numerator, float("nan")),
        numerator / torch.where(zero, 1, denominator),
    )


def normalize(
    matrix: torch.Tensor, bra_self: torch.Tensor, ket_self: torch.Tensor, kind: str
) -> torch.Tensor:
    """Normalized influence ``Ĥ`` (see the module docstring).

    Args:
        matrix: raw ``H`` ``(K, N, N)``, ``matrix[k, n, m] = (b_n^{g_k})ᵀ M⁻¹ a_m``.
        bra_self: ``(K, N)`` ``(b_n^g)ᵀ M⁻¹ b_n^g`` (used by ``cosine`` only).
        ket_self: ``(N,)`` ``a_mᵀ M⁻¹ a_m`` (used by ``cosine`` only).
        kind: ``"standard"``, ``"cosine"`` or ``"none"``.

    Returns:
        ``(K, N, N)``.
    """
    check_normalization(kind, matrix.shape[-1])
    if kind == "none":
        return matrix
    if kind == "standard":
        return _safe_divide(matrix, matrix.std(dim=-1, keepdim=True))
    if torch.isnan(bra_self).any():
        raise ValueError(
            "normalization='cosine' needs the bra self-overlaps (b M⁻¹ b), which were not "
            "computed for this result (GaussNewton(solver='cg') skips them unless asked); "
            "recompute with normalization='cosine'"
        )
    denominator = (bra_self.clamp_min(0)[..., :, None] * ket_self.clamp_min(0)[..., None, :]).sqrt()
    return _safe_divide(matrix, denominator)


__all__ = ["NORMALIZATIONS", "check_normalization", "normalize"]
