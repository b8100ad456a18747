r"""Seeded, batched random initial vorticity fields on the periodic unit square.

Every sample is drawn from its own ``torch.Generator`` seeded with one entry of ``seeds`` (e.g.
``base_seed + trajectory_index``), so a sample does not depend on which batch it was generated in.
Each field is band-limited to the solver's dealiased modes (``3 max(|kx|, |ky|) < n``, integer
wavenumbers), has zero mean, and is scaled so that its velocity has the requested RMS,
``sqrt(mean(u_x² + u_y²)) = velocity_rms``. Families:

* ``"gaussian_random_field"``: ``ω̂(k) ∝ ξ(k) (4π²(a² kx² + ky²) + τ²)^{−β/2}`` with white noise
  ``ξ``, ``τ = 7`` and ``β = 2.5`` (the spectrum of the Fourier-neural-operator benchmark);
* ``"vortices"``: ``ω = Σ_j A_j exp(−(Δx²/a² + Δy²) / (2 r_j²))`` over 8 Gaussian vortices with
  random periodic centres, signs ``A_j = ±1`` and radii ``r_j ∈ [0.04, 0.08]``;
* ``"sines"``: random Fourier coefficients on the low modes ``1 ≤ a² kx² + ky² ≤ 16``.

The **anisotropy** ``a ≥ 1`` stretches structures along ``x`` by the factor ``a`` (``a = 1`` is
isotropic): it breaks the rotation symmetry of the *data distribution* while the dynamics keeps it.

Example:
    >>> omega = initial_vorticity("vortices", 32, seeds=[0, 1], anisotropy=2.0)
    >>> omega.shape, omega.dtype
    (torch.Size([2, 32, 32]), torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

INITIAL_CONDITIONS = ("gaussian_random_field", "vortices", "sines")


def _wavenumbers(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers ``(ky, kx)`` of the full ``fft2`` grid, each ``(n, n)``."""
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    return torch.meshgrid(k, k, indexing="ij")


def _gaussian_random_field(n: int, anisotropy: float, generator: torch.Generator) -> torch.Tensor:
    ky, kx = _wavenumbers(n)
    amplitude = (4 * math.pi**2 * (anisotropy**2 * kx**2 + ky**2) + 49.0) ** (-1.25)
    noise = torch.randn(n, n, dtype=torch.float64, generator=generator)
    return torch.fft.ifft2(torch.fft.fft2(noise) * amplitude).real


def _vortices(n: int, anisotropy: float, generator: torch.Generator) -> torch.Tensor:
    count = 8
    centres = torch.rand(count, 2, dtype=torch.float64, generator=generator)
    signs = torch.randint(0, 2, (count,), generator=generator).to(torch.float64) * 2 - 1
    radii = 0.04 + 0.04 * torch.rand(count, dtype=torch.float64, generator=generator)
    coordinate = torch.arange(n, dtype=torch.float64) / n

    def periodic(delta: torch.Tensor) -> torch.Tensor:
        return delta - torch.round(delta)

    dx = periodic(coordinate[None, None, :] - centres[:, 0, None, None])
    dy = periodic(coordinate[None, :, None] - centres[:, 1, None, None])
    exponent = (dx**2 / anisotropy**2 + dy**2) / (2 * radii[:, None, None] ** 2)
    return (signs[:, None, None] * torch.exp(-exponent)).sum(0)


def _sines(n: int, anisotropy: float, generator: torch.Generator) -> torch.Tensor:
    ky, kx = _wavenumbers(n)
    radius2 = anisotropy**2 * kx**2 + ky**2
    keep = (radius2 >= 1) & (radius2 <= 16)
    coefficients = torch.randn(n, n, 2, dtype=torch.float64, generator=generator)
    spectrum = torch.view_as_complex(coefficients) * keep
    return torch.fft.ifft2(spectrum).real  # the real part keeps the ±k symmetric support


_FAMILIES = {
    "gaussian_random_field": _gaussian_random_field,
    "vortices": _vortices,
    "sines": _sines,
}


def velocity_rms(omega: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean(u_x² + u_y²))`` of the velocity of vorticity ``omega (..., n, n)`` -> ``(...)``.

    Parseval with ``|û(k)|² = |ω̂(k)|² / |2πk|²`` (the mean of ``ω`` carries no velocity).
    """
    n = omega.shape[-1]
    ky, kx = _wavenumbers(n)
    k2 = (4 * math.pi**2 * (kx**2 + ky**2)).to(omega.device)
    weight = torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-30), 0.0).to(omega.dtype)
    power = torch.fft.fft2(omega).abs().pow(2)
    return ((power * weight).sum((-2, -1)) / n**4).sqrt()


def initial_vorticity(
    family: str,
    n: int,
    seeds: Sequence[int],
    anisotropy: float = 1.0,
    velocity_rms_target: float = 1.0,
) -> torch.Tensor:
    """Draw one initial vorticity per seed (see the module docstring for the families).

    Args:
        family: ``"gaussian_random_field"``, ``"vortices"`` or ``"sines"``.
        n: grid points per side.
        seeds: one integer seed per sample.
        anisotropy: stretch factor ``a ≥ 1`` along ``x`` (1 = isotropic).
        velocity_rms_target: RMS velocity of every sample.

    Returns:
        ``(len(seeds), n, n)`` float64, zero mean, band-limited to the dealiased modes.

    Raises:
        ValueError: for an unknown family, ``anisotropy < 1`` or a non-positive target.
    """
    if family not in _FAMILIES:
        raise ValueError(
            f"unknown initial condition {family!r}; choose one of {list(INITIAL_CONDITIONS)}"
        )
    if not anisotropy >= 1.0:
        raise ValueError(
            f"anisotropy is the stretch factor along x and must be ≥ 1 (1 = isotropic); "
            f"got {anisotropy!r}"
        )
    if not velocity_rms_target > 0:
        raise ValueError(f"velocity_rms_target must be positive, got {velocity_rms_target!r}")
    fields = torch.stack(
        [
            _FAMILIES[family](n, anisotropy, torch.Generator().manual_seed(int(seed)))
            for seed in seeds
        ]
    )
    ky, kx = _wavenumbers(n)
    resolved = (3 * torch.maximum(kx.abs(), ky.abs()) < n) & ((kx != 0) | (ky != 0))
    fields = torch.fft.ifft2(torch.fft.fft2(fields) * resolved).real
    return fields * (velocity_rms_target / velocity_rms(fields))[:, None, None]
