r"""Pseudo-spectral solver for 2-D incompressible Navier–Stokes on the periodic unit square.

Vorticity form on ``[0, 1)²``, grid point ``(j, i)`` at ``(x, y) = (i, j) / n`` (``x`` the last axis):

.. math::

    \partial_t \omega + u\cdot\nabla\omega = \nu \Delta\omega - \alpha\,\omega + f, \qquad
    -\Delta\psi = \omega, \qquad u = (\partial_y\psi, -\partial_x\psi),

so that ``ω = ∂x u_y − ∂y u_x`` (a pseudoscalar). Spatial discretization: real FFTs, derivatives
``∂x → i kx`` with ``kx = 2π·(integer wavenumber)`` and the Nyquist derivative set to zero, and the
2/3 rule applied to the advection term with the mask ``3 max(|kx|, |ky|) < 2π n``, which is invariant
under the quarter turns and reflections of the grid (the Nyquist rows and columns are dropped). Time
stepping: the low-storage Runge–Kutta/Crank–Nicolson scheme of Spalart, Moser & Rogers (1991):
advection and forcing explicit (third-order Runge–Kutta, stable up to CFL ≈ 0.8 here), viscosity and
drag implicit (Crank–Nicolson); second order overall, three advection evaluations (two FFT calls
each) per step.

Each substage is fused into few, large tensor operations so that small grids at batch 1 are not
dominated by per-operation dispatch: one complex multiply by a stacked operator gives the spectra of
``(u_x, u_y, ∂x ω, ∂y ω)``, one inverse FFT brings all four to the grid, ``u·∇ω`` is one multiply and
one in-place ``addcmul_``, one forward FFT returns it, and the implicit solve, dealiasing, explicit
weights and forcing are precombined per step size into complex per-mode coefficients, so the update
is one (forced: fused ``addcmul``) multiply and one or two in-place ``addcmul_``. Nothing is promoted
between real and complex dtypes inside a step.

Every operator is built in float64 and kept as a non-persistent buffer; :meth:`rollout` casts it to
the input's dtype and device, so the solver runs in float32 or float64 on CPU or GPU with any leading
batch shape.

Symmetry: :attr:`NavierStokes2D.symmetry_group` is every rotation, reflection and integer shift of
the grid that fixes the forcing (``8 n²`` elements unforced); the solver commutes with each of them.
:attr:`NavierStokes2D.diagnostic_group` is a small subgroup of it for diagnostics (``D4`` unforced);
both are derived from the forcing field in :mod:`symcoherence.data.navier_stokes.forcing`.

Example:
    >>> import math, torch
    >>> solver = NavierStokes2D(16, viscosity=0.01, dt=0.01)
    >>> coordinate = torch.arange(16, dtype=torch.float64) / 16
    >>> omega0 = torch.sin(2 * math.pi * coordinate)[:, None] * torch.sin(2 * math.pi * coordinate)
    >>> solver.rollout(omega0, [0.0, 0.1]).shape
    torch.Size([2, 16, 16])
    >>> solver.diagnostic_group.name, solver.symmetry_group.name, len(solver.symmetry_group)
    ('D4', 'D4xShifts', 2048)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch

from symcoherence.data.navier_stokes.forcing import Forcing, orbit_group, stabilizer
from symcoherence.groups import LatticeGroup

# Spalart, Moser & Rogers (1991): substage k uses gamma_k N(ω_k) + zeta_k N(ω_{k-1}) explicitly and
# alpha_k = beta_k = (gamma_k + zeta_k) / 2 of the linear term on each side (Crank–Nicolson).
_GAMMA = (8 / 15, 5 / 12, 3 / 4)
_ZETA = (0.0, -17 / 60, -5 / 12)


class NavierStokes2D(torch.nn.Module):
    """Pseudo-spectral 2-D Navier–Stokes solver (see the module docstring for the equations).

    Args:
        n: grid points per side (even or odd).
        viscosity: ``ν ≥ 0``.
        forcing: ``None`` or a :class:`~symcoherence.data.navier_stokes.Forcing` on the same grid
            (build one with :func:`~symcoherence.data.navier_stokes.make_forcing`).
        drag: linear drag ``α ≥ 0``.
        dt: time step; ``None`` picks ``0.5 · max_cfl`` of the initial state in each rollout.
        max_cfl: largest allowed ``dt · n · max(|u_x| + |u_y|)``; exceeded at any output time, a
            rollout raises.

    Attributes:
        symmetry_group: every rotation, reflection and integer shift that fixes the forcing, hence
            commutes with the solver (:func:`~symcoherence.data.navier_stokes.stabilizer`,
            ``8 n²`` elements when unforced).
        diagnostic_group: a small subgroup of ``symmetry_group`` that diagnostics measure by
            default (``D4`` when unforced; :func:`~symcoherence.data.navier_stokes.orbit_group`).
    """

    def __init__(
        self,
        n: int,
        viscosity: float,
        forcing: Forcing | None = None,
        drag: float = 0.0,
        *,
        dt: float | None = None,
        max_cfl: float = 0.8,
    ):
        super().__init__()
        if not isinstance(n, int) or n < 4:
            raise ValueError(f"n must be an integer grid size ≥ 4, got {n!r}")
        if viscosity < 0 or drag < 0:
            raise ValueError(f"viscosity and drag must be ≥ 0, got {viscosity} and {drag}")
        if dt is not None and not dt > 0:
            raise ValueError(f"dt must be positive or None (automatic), got {dt!r}")
        if not 0 < max_cfl <= 1.0:
            raise ValueError(
                f"max_cfl must lie in (0, 1] for the explicit RK3 stage, got {max_cfl}"
            )
        if forcing is not None and tuple(forcing.field.shape) != (n, n):
            raise ValueError(
                f"forcing {forcing.name} is on a grid of shape {tuple(forcing.field.shape)} but the "
                f"solver has n={n}; build it with make_forcing(kind, {n})"
            )
        self.n, self.viscosity, self.drag, self.dt, self.max_cfl = n, viscosity, drag, dt, max_cfl
        self.forcing = forcing
        integers_y = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
        integers_x = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64)
        ky, kx = torch.meshgrid(2 * math.pi * integers_y, 2 * math.pi * integers_x, indexing="ij")
        k2 = kx**2 + ky**2
        inverse_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-30), 0.0)
        nyquist = n % 2 == 0
        dx = 1j * torch.where((integers_x == n // 2) & nyquist, 0.0, kx)
        dy = 1j * torch.where((integers_y[:, None] == -(n // 2)) & nyquist, 0.0, ky)
        dealias = 3 * torch.maximum(integers_y.abs()[:, None], integers_x.abs()[None, :]) < n
        # ω̂ -> (u_x, u_y, ∂x ω, ∂y ω) in one complex multiply and one inverse FFT
        fields = torch.stack([dy * inverse_k2, -dx * inverse_k2, dx, dy])
        self.register_buffer("_fields", fields, persistent=False)
        self.register_buffer("_dx", dx, persistent=False)
        self.register_buffer("_dy", dy, persistent=False)
        self.register_buffer("_linear", -viscosity * k2 - drag, persistent=False)
        self.register_buffer("_dealias", dealias.to(torch.float64), persistent=False)
        zero = torch.zeros(n, n, dtype=torch.float64)
        forcing_hat = torch.fft.rfft2(zero if forcing is None else forcing.field)
        self.register_buffer("_forcing_hat", forcing_hat, persistent=False)

    # ------------------------------------------------------------------ conversions
    def velocity(self, omega: torch.Tensor) -> torch.Tensor:
        """``u = (∂y ψ, −∂x ψ)`` with ``−Δψ = ω``: ``(..., n, n) -> (..., 2, n, n)``, channels (u_x, u_y).

        Exact spectrally; the mean of ``ω`` (and Nyquist content on even grids) has no velocity.
        """
        self._check(omega, "omega", extra=0)
        omega_hat = torch.fft.rfft2(omega)
        fields = self._fields[:2].to(device=omega.device, dtype=omega_hat.dtype)
        return torch.fft.irfft2(omega_hat.unsqueeze(-3) * fields, s=(self.n, self.n))

    def vorticity(self, u: torch.Tensor) -> torch.Tensor:
        """``ω = ∂x u_y − ∂y u_x``: ``(..., 2, n, n) -> (..., n, n)``, inverse of :meth:`velocity`.

        ``vorticity(velocity(ω)) = ω − mean(ω)`` for fields without Nyquist content.
        """
        self._check(u, "u", extra=1)
        if u.shape[-3] != 2:
            raise ValueError(
                f"u must be (..., 2, n, n) with channels (u_x, u_y); got {tuple(u.shape)}"
            )
        u_hat = torch.fft.rfft2(u)
        dx = self._dx.to(device=u.device, dtype=u_hat.dtype)
        dy = self._dy.to(device=u.device, dtype=u_hat.dtype)
        return torch.fft.irfft2(
            dx * u_hat[..., 1, :, :] - dy * u_hat[..., 0, :, :], s=(self.n, self.n)
        )

    def _check(self, field: torch.Tensor, name: str, extra: int) -> None:
        if not isinstance(field, torch.Tensor) or not field.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point torch.Tensor, got {type(field).__name__}"
            )
        if field.dim() < 2 + extra or tuple(field.shape[-2:]) != (self.n, self.n):
            raise ValueError(
                f"{name} must end in ({'2, ' if extra else ''}{self.n}, {self.n}) for this solver "
                f"(n={self.n}); got shape {tuple(field.shape)}"
            )

    # ------------------------------------------------------------------ time stepping
    def cfl(self, omega: torch.Tensor, dt: float) -> float:
        """``dt · n · max over the batch and grid of (|u_x| + |u_y|)`` for vorticity ``omega``."""
        return float(dt * self.n * self.velocity(omega).abs().sum(-3).max())

    def rollout(self, omega0: torch.Tensor, times: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Integrate from ``omega0`` at ``t = 0`` and return the vorticity at ``times``.

        Between output times the step is ``Δ / ceil(Δ / dt)`` so that every output time is hit
        exactly.

        Args:
            omega0: ``(..., n, n)`` initial vorticity (float32 or float64, any device).
            times: non-decreasing output times ``≥ 0`` (``0`` returns ``omega0``).

        Returns:
            ``(len(times), ..., n, n)`` in the dtype and on the device of ``omega0``.

        Raises:
            ValueError: for bad shapes or times, or if the initial CFL number exceeds ``max_cfl``.
            FloatingPointError: if the CFL limit is exceeded or values stop being finite during the
                run (the rollout stops before returning anything).
        """
        self._check(omega0, "omega0", extra=0)
        times = torch.as_tensor(times, dtype=torch.float64).reshape(-1).tolist()
        if not times or times[0] < 0 or any(b < a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(
                f"times must be a non-empty, non-decreasing list of values ≥ 0; got {times}"
            )
        if not torch.isfinite(omega0).all():
            raise ValueError("omega0 contains NaN or Inf values")
        dt = self.dt if self.dt is not None else self._automatic_dt(omega0)
        initial_cfl = self.cfl(omega0, dt)
        if initial_cfl > self.max_cfl:
            raise ValueError(
                f"the initial CFL number dt·n·max(|u_x|+|u_y|) = {initial_cfl:.3g} exceeds "
                f"max_cfl={self.max_cfl} (dt={dt:g}, n={self.n}); reduce dt or the initial amplitude"
            )
        operators = self._operators(omega0)
        omega_hat = torch.fft.rfft2(omega0)
        frames, current, now = [], omega0, 0.0
        for target in times:
            steps = math.ceil((target - now) / dt - 1e-9)
            for _ in range(steps):
                omega_hat = self._step(omega_hat, (target - now) / steps, operators)
            if steps:
                current = torch.fft.irfft2(omega_hat, s=(self.n, self.n))
                self._check_state(current, dt, target)
            frames.append(current)
            now = target
        return torch.stack(frames)

    def _automatic_dt(self, omega0: torch.Tensor) -> float:
        speed = float(self.velocity(omega0).abs().sum(-3).max())
        if speed == 0.0:
            return 1.0 / self.n
        return 0.5 * self.max_cfl / (self.n * speed)

    def _check_state(self, omega: torch.Tensor, dt: float, time: float) -> None:
        if not torch.isfinite(omega).all():
            raise FloatingPointError(
                f"the solution stopped being finite by t={time:g} (dt={dt:g}, n={self.n}, "
                f"viscosity={self.viscosity}); reduce dt, raise the viscosity or lower the amplitude"
            )
        cfl = self.cfl(omega, dt)
        if cfl > self.max_cfl:
            raise FloatingPointError(
                f"the CFL number dt·n·max(|u_x|+|u_y|) reached {cfl:.3g} > max_cfl={self.max_cfl} "
                f"at t={time:g} (dt={dt:g}, n={self.n}); reduce dt or the amplitude"
            )

    def _operators(self, like: torch.Tensor) -> dict:
        complex_dtype = torch.complex128 if like.dtype == torch.float64 else torch.complex64
        return {
            "fields": self._fields.to(device=like.device, dtype=complex_dtype),
            "complex_dtype": complex_dtype,
            "device": like.device,
            "stages": {},  # step size -> per-stage coefficients
        }

    def _step(self, omega_hat: torch.Tensor, h: float, operators: dict) -> torch.Tensor:
        r"""One RK3/Crank–Nicolson step of size ``h``.

        Substage ``k`` solves, per Fourier mode (``L = −ν|k|² − α``),

        .. math:: (1 - \beta_k h L)\,\hat\omega_{k+1} = (1 + \beta_k h L)\,\hat\omega_k
            + \gamma_k h \hat N_k + \zeta_k h \hat N_{k-1},
            \qquad \hat N = \hat f - \mathrm{mask}\cdot\widehat{u\cdot\nabla\omega},

        with ``β_k = (γ_k + ζ_k) / 2``, evaluated as
        ``ω̂_{k+1} = c_k + r_k ω̂_k + e_k A_k + p_k A_{k−1}`` with ``A = rfft2(u·∇ω)`` and the
        per-mode coefficients of :meth:`_stage_coefficients`. ``u·∇ω`` costs one multiply by the
        stacked operator, one inverse FFT of the four fields, one multiply and one in-place
        ``addcmul_``, and one forward FFT; the update one multiply (or ``addcmul`` when forced) and
        one or two in-place ``addcmul_``. The input is never written to.
        """
        if h not in operators["stages"]:
            operators["stages"][h] = self._stage_coefficients(h, operators)
        fields, grid = operators["fields"], (self.n, self.n)
        previous = None
        for ratio, explicit, explicit_previous, constant in operators["stages"][h]:
            u_x, u_y, dx_omega, dy_omega = torch.fft.irfft2(
                omega_hat.unsqueeze(-3) * fields, s=grid
            ).unbind(-3)
            advection = u_x * dx_omega
            advection.addcmul_(u_y, dy_omega)
            current = torch.fft.rfft2(advection)  # not yet dealiased: the mask is in e and p
            if constant is None:
                update = ratio * omega_hat
            else:
                update = torch.addcmul(constant, ratio, omega_hat)
            update.addcmul_(explicit, current)
            if explicit_previous is not None:
                update.addcmul_(explicit_previous, previous)
            omega_hat, previous = update, current
        return omega_hat

    def _stage_coefficients(self, h: float, operators: dict) -> list[tuple]:
        """Per substage ``(r, e, p, c)``, complex in the working dtype (no promotion in a step).

        ``s = 1 / (1 − β h L)``; ``r = s (1 + β h L)``, ``e = −γ h s · mask``,
        ``p = −ζ h s · mask`` (``None`` when ``ζ = 0``), ``c = (γ + ζ) h s f̂`` (``None`` unforced).
        """
        cast = {"device": operators["device"], "dtype": operators["complex_dtype"]}
        stages = []
        for gamma, zeta in zip(_GAMMA, _ZETA, strict=True):
            half = 0.5 * (gamma + zeta) * h * self._linear
            solve = 1.0 / (1.0 - half)
            masked = -h * solve * self._dealias  # advection: minus sign, dealiased modes only
            stages.append(
                (
                    (solve * (1.0 + half)).to(**cast),
                    (gamma * masked).to(**cast),
                    (zeta * masked).to(**cast) if zeta != 0.0 else None,
                    ((gamma + zeta) * h * solve * self._forcing_hat).to(**cast)
                    if self.forcing is not None
                    else None,
                )
            )
        return stages

    # ------------------------------------------------------------------ symmetry
    @cached_property
    def symmetry_group(self) -> LatticeGroup:
        """Every rotation, reflection and integer shift that fixes the forcing (built on first use)."""
        return stabilizer(self._forcing_or_zero())

    @cached_property
    def diagnostic_group(self) -> LatticeGroup:
        """The small admissible subgroup measured by default (``D4`` when unforced)."""
        return orbit_group(self._forcing_or_zero())

    def _forcing_or_zero(self) -> Forcing:
        if self.forcing is not None:
            return self.forcing
        return Forcing("Unforced", torch.zeros(self.n, self.n, dtype=torch.float64))
