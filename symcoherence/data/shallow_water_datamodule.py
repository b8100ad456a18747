"""``SphericalShallowWaterDataModule``: cached shallow-water trajectories as one-step pairs.

The datamodule of the solver in :mod:`symcoherence.data.shallow_water`, generating its trajectories
into the shared HDF5 cache as a :class:`~symcoherence.data.generated.GeneratedTrajectoryDataModule`;
the class docstring describes the data, the defaults, a larger preset and the symmetry groups.

Example:
    >>> data = SphericalShallowWaterDataModule(fields="vdh")
    >>> data.symmetry_group.name, len(data.symmetry_group), data.field_type
    ('ZonalxEquator', 16, FieldType(['pseudoscalar', 'scalar', 'scalar']))
"""

from __future__ import annotations

import math

import numpy as np
import torch

from symcoherence.data.generated import GeneratedTrajectoryDataModule
from symcoherence.data.shallow_water import INITIAL_CONDITIONS, SphericalShallowWater
from symcoherence.groups import EquatorialReflection, Group, SphereProduct, ZonalShifts


class SphericalShallowWaterDataModule(GeneratedTrajectoryDataModule):
    """One-step pairs from cached shallow-water trajectories on the sphere.

    ``prepare_data`` generates the trajectories with
    :class:`~symcoherence.data.shallow_water.SphericalShallowWater` (or finds them in the shared
    HDF5 cache, keyed by every parameter below and the torch-harmonics version); ``setup`` loads,
    splits by trajectory and normalizes them
    (:class:`~symcoherence.data.trajectories.TrajectoryDataModule`: one scale for ``(u, v)``, no
    mean removed from vectors and vorticity, so normalization commutes with the group). Trajectory
    ``i`` starts from
    :meth:`~symcoherence.data.shallow_water.SphericalShallowWater.initial_condition` with seed
    ``seed · 1_000_003 + i``, runs ``burn_in`` frame intervals, then records ``num_frames`` frames
    ``steps_per_frame · dt`` seconds apart.

    The defaults (32×64 grid, 32 trajectories of 12 hourly frames) generate in a few seconds on one
    CPU core. A larger preset (a GPU helps; the step limit halves with each doubling of the grid)::

        SphericalShallowWaterDataModule(nlat=64, nlon=128, dt=300.0, steps_per_frame=12,
                                        num_trajectories=256, num_frames=24, device="cuda")

    Symmetry: ``declared_group`` is everything the solver commutes with (all ``nlon`` zonal shifts
    and the equatorial mirror, ``2·nlon`` elements); ``symmetry_group``, the default orbit of the
    diagnostics, is its subgroup ``ZonalShifts(nlon, stride=zonal_stride) × EquatorialReflection``
    named ``"ZonalxEquator"``.

    Args:
        nlat: latitudes (index 0 at the north pole).
        nlon: longitudes (eastward along the last axis).
        grid: ``"equiangular"``, ``"legendre-gauss"`` or ``"lobatto"``.
        lmax: spectral truncation (default ``ceil(nlat / 3)``).
        dt: solver step in seconds.
        steps_per_frame: solver steps between recorded frames.
        num_trajectories: trajectories to generate (split by ``val_fraction``/``test_fraction``).
        num_frames: recorded frames per trajectory.
        burn_in: frame intervals simulated before the first recorded frame.
        initial_condition: ``"random"`` or ``"galewsky"`` (see
            :meth:`~symcoherence.data.shallow_water.SphericalShallowWater.initial_condition`).
        mach: wind scale of the random initial condition.
        perturbation: random perturbation of the Galewsky jet.
        fields: ``"uvh"`` (vector + scalar) or ``"vdh"`` (pseudoscalar + two scalars).
        zonal_stride: shift step of the diagnostic group (default ``nlon // gcd(nlon, 8)``: up to 8
            shifts); must divide ``nlon``.
        history: input frames per sample.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of trajectories for validation.
        test_fraction: fraction of trajectories for testing.
        seed: seed of the initial conditions and of the split.
        augment_group: augment training samples by random elements of this group (``"default"``:
            ``symmetry_group``; a JSON spec or a Group), or ``None``.
        normalize: normalize fields (commuting with the group).
        cache_dir: directory of the HDF5 trajectory cache.
        device: torch device of the simulation.
        generation_batch: trajectories per cache chunk.
        progress: show a progress bar while generating.

    Raises:
        ValueError: for a bad grid, time step, field set, initial condition or size, before
            anything is computed.
    """

    cache_prefix = "shallow_water"

    def __init__(
        self,
        nlat: int = 32,
        nlon: int = 64,
        grid: str = "equiangular",
        lmax: int | None = None,
        dt: float = 600.0,
        steps_per_frame: int = 6,
        num_trajectories: int = 32,
        num_frames: int = 12,
        burn_in: int = 0,
        initial_condition: str = "random",
        mach: float = 0.2,
        perturbation: float = 0.01,
        fields: str = "uvh",
        zonal_stride: int | None = None,
        history: int = 1,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.125,
        test_fraction: float = 0.125,
        seed: int = 0,
        augment_group: Group | str | None = None,
        normalize: bool = True,
        cache_dir: str = "./data_cache",
        device: str = "cpu",
        generation_batch: int = 8,
        progress: bool = True,
    ):
        if initial_condition not in INITIAL_CONDITIONS:
            raise ValueError(
                f"initial_condition must be one of {list(INITIAL_CONDITIONS)}, got "
                f"{initial_condition!r}"
            )
        for label, value, least in (
            ("steps_per_frame", steps_per_frame, 1),
            ("num_trajectories", num_trajectories, 1),
            ("num_frames", num_frames, 2),
            ("burn_in", burn_in, 0),
            ("generation_batch", generation_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
        if num_frames <= history:
            raise ValueError(
                f"num_frames = {num_frames} leaves no target for history = {history}; record at "
                f"least {history + 1} frames"
            )
        self.solver = SphericalShallowWater(nlat, nlon, dt, fields, grid, lmax, device)
        self.declared_group = self.solver.symmetry_group
        zonal_stride = nlon // math.gcd(nlon, 8) if zonal_stride is None else zonal_stride
        diagnostic = SphereProduct(ZonalShifts(nlon, stride=zonal_stride), EquatorialReflection())
        from torch_harmonics import __version__ as torch_harmonics_version

        config = {
            "solver": "torch_harmonics.examples.ShallowWaterSolver/AB3",
            "torch_harmonics": torch_harmonics_version,
            "nlat": nlat,
            "nlon": nlon,
            "grid": grid,
            "lmax": self.solver.lmax,
            "dt": float(dt),
            "steps_per_frame": steps_per_frame,
            "num_trajectories": num_trajectories,
            "num_frames": num_frames,
            "burn_in": burn_in,
            "initial_condition": initial_condition,
            "mach": float(mach),
            "perturbation": float(perturbation),
            "fields": fields,
            "seed": seed,
        }
        super().__init__(
            self.solver.field_type,
            diagnostic,
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

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``."""
        return self.config["nlat"], self.config["nlon"]

    @property
    def times(self) -> np.ndarray:
        """``(num_frames,)`` recorded times in seconds."""
        config = self.config
        interval = config["dt"] * config["steps_per_frame"]
        return interval * (config["burn_in"] + np.arange(config["num_frames"]))

    def generate(self, start: int, count: int) -> torch.Tensor:
        """Trajectories ``start … start + count − 1`` as ``(count, T, 3, nlat, nlon)`` float32."""
        config = self.config
        states = torch.stack(
            [
                self.solver.initial_condition(
                    config["initial_condition"],
                    seed=config["seed"] * 1_000_003 + index,
                    mach=config["mach"],
                    perturbation=config["perturbation"],
                )
                for index in range(start, start + count)
            ]
        )
        steps = config["steps_per_frame"]
        with torch.no_grad():
            if config["burn_in"]:
                states = self.solver.step(states, config["burn_in"] * steps)
            frames = self.solver.rollout(states, config["num_frames"], steps)
        return frames.transpose(0, 1).float().cpu()
