r"""``NavierStokesDataModule``: cached 2-D Navier–Stokes trajectories as one-step training pairs.

``prepare_data`` generates the trajectories with :class:`~symcoherence.data.NavierStokes2D` (or
finds them in the HDF5 cache, keyed by every parameter below), ``setup`` loads, splits and normalizes
them (:class:`~symcoherence.data.generated.GeneratedTrajectoryDataModule`). Trajectory ``i``
starts from :func:`~symcoherence.data.initial_conditions.initial_vorticity` with seed
``seed · 1_000_003 + i``, runs for ``burn_in``, then records ``num_frames`` frames
``frame_interval`` apart.

The defaults (64², 32 trajectories of 20 frames) generate in seconds on a CPU. A GPU preset with
more resolution and data::

    NavierStokesDataModule(n=128, num_trajectories=256, num_frames=40, viscosity=5e-4,
                           solver_dtype="float64", device="cuda", batch_size=32)

The declared symmetry (``declared_group``) is every rotation, reflection and integer shift that
fixes the forcing; ``symmetry_group`` is its small diagnostic subgroup (``D4`` unforced,
``"Kolmogorov"`` or ``"Diagonal"`` otherwise; see :mod:`symcoherence.data.forcing`).

Example:
    >>> data = NavierStokesDataModule(n=32, forcing="kolmogorov", fields="velocity")
    >>> data.symmetry_group.name, data.field_type, data.in_channels
    ('Kolmogorov', FieldType(['vector']), 2)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from symcoherence.data.forcing import FORCINGS, make_forcing
from symcoherence.data.generated import GeneratedTrajectoryDataModule
from symcoherence.data.initial_conditions import INITIAL_CONDITIONS, initial_vorticity
from symcoherence.data.navier_stokes import NavierStokes2D
from symcoherence.groups import FieldType, Group, LatticeGroup

_FIELDS = {"vorticity": FieldType(["pseudoscalar"]), "velocity": FieldType(["vector"])}
_PEAK = 3.0  # assumed max(|u_x| + |u_y|) / velocity scale, for choosing and checking dt


class NavierStokesDataModule(GeneratedTrajectoryDataModule):
    """One-step pairs from cached Navier–Stokes trajectories (see the module docstring).

    Args:
        n: grid points per side.
        num_trajectories: trajectories to generate (split by ``val_fraction``/``test_fraction``).
        num_frames: recorded frames per trajectory.
        frame_interval: time between recorded frames.
        burn_in: time simulated before the first recorded frame.
        viscosity: ``ν``.
        drag: linear drag ``α``.
        forcing: ``None``, ``"kolmogorov"`` or ``"diagonal"``.
        forcing_amplitude: forcing amplitude (``None``: 1 for Kolmogorov, 0.1 for diagonal).
        forcing_wavenumber: Kolmogorov wavenumber ``k`` in ``sin(2π k y)``.
        initial_condition: ``"gaussian_random_field"``, ``"vortices"`` or ``"sines"``.
        anisotropy: stretch factor of the initial structures along ``x`` (1 = isotropic).
        velocity_rms: RMS velocity of every initial condition.
        dt: solver step (``None``: ``0.4 / (3 n U)`` with ``U`` the larger of ``velocity_rms``
            and the laminar forced velocity).
        fields: ``"vorticity"`` (pseudoscalar) or ``"velocity"`` (vector ``(u_x, u_y)``).
        history: input frames per sample.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of trajectories for validation.
        test_fraction: fraction of trajectories for testing.
        seed: seed of the initial conditions and of the split.
        augment_group: augment training samples by random elements of this group (``"default"``:
            ``symmetry_group``; ``"D4"``, ``"C4"``, a JSON spec or a Group), or ``None``.
        normalize: one scale per field, no mean for vorticity/velocity.
        cache_dir: directory of the HDF5 trajectory cache.
        solver_dtype: ``"float32"`` or ``"float64"`` for the simulation (stored as float32).
        device: torch device of the simulation (e.g. ``"cuda"``).
        generation_batch: trajectories per simulated batch (and per cache chunk).
        progress: show a progress bar while generating.

    Raises:
        ValueError: for an unknown forcing, initial condition or fields, a step whose estimated CFL
            number exceeds 0.8, or an inconsistent size, before anything is computed.
    """

    cache_prefix = "navier_stokes"

    def __init__(
        self,
        n: int = 64,
        num_trajectories: int = 32,
        num_frames: int = 20,
        frame_interval: float = 0.05,
        burn_in: float = 0.25,
        viscosity: float = 1e-3,
        drag: float = 0.0,
        forcing: str | None = None,
        forcing_amplitude: float | None = None,
        forcing_wavenumber: int = 4,
        initial_condition: str = "gaussian_random_field",
        anisotropy: float = 1.0,
        velocity_rms: float = 1.0,
        dt: float | None = None,
        fields: str = "vorticity",
        history: int = 1,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.125,
        test_fraction: float = 0.125,
        seed: int = 0,
        augment_group: Group | str | None = None,
        normalize: bool = True,
        cache_dir: str = "./data_cache",
        solver_dtype: str = "float32",
        device: str = "cpu",
        generation_batch: int = 16,
        progress: bool = True,
    ):
        if fields not in _FIELDS:
            raise ValueError(f"fields must be 'vorticity' or 'velocity', got {fields!r}")
        if forcing is not None and forcing not in FORCINGS:
            raise ValueError(f"unknown forcing {forcing!r}; choose None or one of {list(FORCINGS)}")
        if initial_condition not in INITIAL_CONDITIONS:
            raise ValueError(
                f"unknown initial_condition {initial_condition!r}; choose one of "
                f"{list(INITIAL_CONDITIONS)}"
            )
        if solver_dtype not in ("float32", "float64"):
            raise ValueError(f"solver_dtype must be 'float32' or 'float64', got {solver_dtype!r}")
        if anisotropy < 1.0 or velocity_rms <= 0 or frame_interval <= 0 or burn_in < 0:
            raise ValueError(
                "need anisotropy ≥ 1, velocity_rms > 0, frame_interval > 0 and burn_in ≥ 0; got "
                f"{anisotropy}, {velocity_rms}, {frame_interval}, {burn_in}"
            )
        if num_frames < history + 1 or num_trajectories < 1:
            raise ValueError(
                f"need num_trajectories ≥ 1 and num_frames > history = {history}; got "
                f"{num_trajectories} and {num_frames}"
            )
        self.forcing_field = make_forcing(forcing, n, forcing_amplitude, forcing_wavenumber)
        speed = max(velocity_rms, self._laminar_speed(viscosity, drag, forcing_wavenumber))
        max_cfl = 0.8
        dt = 0.5 * max_cfl / (n * _PEAK * speed) if dt is None else dt
        estimate = dt * n * _PEAK * speed
        if not dt > 0 or estimate > max_cfl:
            raise ValueError(
                f"dt={dt} is unstable: the estimated CFL number dt·n·max(|u_x|+|u_y|) ≈ "
                f"{estimate:.3g} exceeds {max_cfl} (velocity scale {speed:.3g}, n={n}); use "
                f"dt ≤ {max_cfl / (n * _PEAK * speed):.3g} or dt=None"
            )
        self.solver = NavierStokes2D(
            n, viscosity, forcing=None if forcing is None else self.forcing_field, drag=drag, dt=dt
        )
        config = {
            "solver": "NavierStokes2D/RK3-CN",
            "n": n,
            "num_trajectories": num_trajectories,
            "num_frames": num_frames,
            "frame_interval": frame_interval,
            "burn_in": burn_in,
            "viscosity": viscosity,
            "drag": drag,
            "forcing": forcing,
            "forcing_amplitude": forcing_amplitude,
            "forcing_wavenumber": forcing_wavenumber,
            "initial_condition": initial_condition,
            "anisotropy": anisotropy,
            "velocity_rms": velocity_rms,
            "dt": dt,
            "fields": fields,
            "seed": seed,
            "solver_dtype": solver_dtype,
        }
        super().__init__(
            _FIELDS[fields],
            self.solver.symmetry_group,
            config,
            cache_dir=cache_dir,
            generation_batch=generation_batch,
            progress=progress,
            history=history,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=seed,
            augment_group=augment_group,
            normalize=normalize,
        )
        self.device = device

    def _laminar_speed(self, viscosity: float, drag: float, wavenumber: int) -> float:
        """Speed of the steady laminar response ``u ~ A / ((ν K² + α) K)`` to the forcing."""
        amplitude = float(self.forcing_field.field.abs().max())
        if amplitude == 0.0:
            return 0.0
        wave = (
            2 * math.pi * (wavenumber if self.forcing_field.name == "Kolmogorov" else math.sqrt(2))
        )
        damping = viscosity * wave**2 + drag
        if damping == 0.0:
            raise ValueError("a forced run needs viscosity > 0 or drag > 0 to stay bounded")
        return amplitude / (damping * wave)

    @property
    def declared_group(self) -> LatticeGroup:
        """Every rotation, reflection and integer shift that fixes the forcing."""
        return self.solver.declared_group

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return self.config["n"], self.config["n"]

    @property
    def times(self) -> np.ndarray:
        """``(num_frames,)`` recorded times."""
        config = self.config
        return config["burn_in"] + config["frame_interval"] * np.arange(config["num_frames"])

    def generate(self, start: int, count: int) -> torch.Tensor:
        """Trajectories ``start … start + count − 1`` as ``(count, T, C, n, n)`` float32."""
        config = self.config
        seeds = [config["seed"] * 1_000_003 + index for index in range(start, start + count)]
        omega0 = initial_vorticity(
            config["initial_condition"],
            config["n"],
            seeds,
            anisotropy=config["anisotropy"],
            velocity_rms_target=config["velocity_rms"],
        )
        dtype = getattr(torch, config["solver_dtype"])
        solver = self.solver.to(self.device)
        with torch.no_grad():
            omega = solver.rollout(omega0.to(self.device, dtype), self.times).transpose(0, 1)
            frames = solver.velocity(omega) if config["fields"] == "velocity" else omega[:, :, None]
        return frames.float().cpu()
