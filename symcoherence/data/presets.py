"""Conveniences: a :class:`~symcoherence.data.TrajectoryDataModule` and its source in one call.

``NavierStokesDataModule(n=32, num_trajectories=32, val_fraction=0.25)`` is
``TrajectoryDataModule(NavierStokesSource(n=32, num_trajectories=32), val_fraction=0.25)``: every
keyword that names a field of the source configures the source, the others are
:class:`~symcoherence.data.TrajectoryDataModule` options (positional arguments go to the source). The
result is a :class:`~symcoherence.data.TrajectoryDataModule` with nothing added; configs give the
source explicitly instead (``source: {class_path: symcoherence.data.NavierStokesSource, ...}``).

Example:
    >>> data = NavierStokesDataModule(n=32, forcing="kolmogorov", fields="velocity", batch_size=8)
    >>> data.source.n, data.batch_size, data.diagnostic_group.name, data.field_type
    (32, 8, 'Kolmogorov', FieldType(['vector']))
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, ClassVar

from symcoherence.data.datamodule import TrajectoryDataModule
from symcoherence.data.hdf5 import HDF5Source
from symcoherence.data.navier_stokes import NavierStokesSource
from symcoherence.data.shallow_water import SphericalShallowWaterSource
from symcoherence.data.source import TrajectorySource

_PIPELINE_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(TrajectoryDataModule.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


class _SourceDataModule(TrajectoryDataModule):
    """A :class:`TrajectoryDataModule` whose source is built from the same keyword arguments."""

    source_class: ClassVar[type[TrajectorySource]]

    def __init__(self, *args: Any, source: TrajectorySource | None = None, **options: Any):
        name = type(self).__name__
        source_options = {f.name for f in dataclasses.fields(self.source_class) if f.init}
        unknown = sorted(set(options) - source_options - set(_PIPELINE_OPTIONS))
        if unknown:
            known = sorted(source_options | set(_PIPELINE_OPTIONS))
            hints = [
                f"{word!r} (did you mean {close[0]!r}?)" if close else repr(word)
                for word in unknown
                for close in [difflib.get_close_matches(word, known, n=1)]
            ]
            raise TypeError(
                f"{name} got unknown option(s) {', '.join(hints)}; the {self.source_class.__name__} "
                f"options are {sorted(source_options)} and the pipeline options are "
                f"{list(_PIPELINE_OPTIONS)}"
            )
        given = {key: options.pop(key) for key in list(options) if key in source_options}
        if source is None:
            source = self.source_class(*args, **given)
        elif args or given:
            raise TypeError(
                f"{name}: pass either source= or the source's options {sorted(given)}, not both"
            )
        elif not isinstance(source, self.source_class):
            raise TypeError(
                f"{name} needs a {self.source_class.__name__}, got {type(source).__name__}; use "
                "TrajectoryDataModule(source, ...) for any other source"
            )
        super().__init__(source, **options)


class NavierStokesDataModule(_SourceDataModule):
    """``TrajectoryDataModule(NavierStokesSource(**source options), **pipeline options)``.

    Every keyword that names a field of :class:`~symcoherence.data.NavierStokesSource` (``n``,
    ``num_trajectories``, ``num_frames``, ``viscosity``, ``forcing``, ``fields``, ``seed``, ...)
    configures the source; the others are :class:`~symcoherence.data.TrajectoryDataModule`
    options (``history``, ``batch_size``, ``val_fraction``, ``cache_dir``, ...).

    Example:
        >>> data = NavierStokesDataModule(n=32, num_trajectories=32, num_frames=12,
        ...                               val_fraction=0.25)
        >>> data.diagnostic_group.name, data.symmetry_group.name, data.in_channels
        ('D4', 'D4xShifts', 1)

    Raises:
        TypeError: for an option that neither the source nor the pipeline takes.
        ValueError: for an invalid configuration (before anything is simulated).
    """

    source_class = NavierStokesSource


class SphericalShallowWaterDataModule(_SourceDataModule):
    """``TrajectoryDataModule(SphericalShallowWaterSource(**source options), **pipeline options)``.

    Every keyword that names a field of :class:`~symcoherence.data.SphericalShallowWaterSource`
    (``nlat``, ``nlon``, ``dt``, ``steps_per_frame``, ``fields``, ``zonal_stride``, ``seed``, ...)
    configures the source; the others are :class:`~symcoherence.data.TrajectoryDataModule` options.

    Example:
        >>> data = SphericalShallowWaterDataModule(fields="vdh", history=2)
        >>> data.diagnostic_group.name, len(data.diagnostic_group), data.in_channels
        ('ZonalxEquator', 16, 6)

    Raises:
        TypeError: for an option that neither the source nor the pipeline takes.
        ValueError: for an invalid configuration (before anything is simulated).
    """

    source_class = SphericalShallowWaterSource


class HDF5TrajectoryDataModule(_SourceDataModule):
    """``TrajectoryDataModule(HDF5Source(path, dataset, ...), **pipeline options)``.

    Positional arguments and the keywords ``field_type``, ``symmetry_group`` and
    ``diagnostic_group`` configure the :class:`~symcoherence.data.HDF5Source`; the others are
    :class:`~symcoherence.data.TrajectoryDataModule` options.

    Example:
        >>> import tempfile, h5py, numpy as np
        >>> with tempfile.TemporaryDirectory() as root:
        ...     with h5py.File(f"{root}/flow.h5", "w") as file:
        ...         _ = file.create_dataset("u", data=np.random.randn(4, 3, 2, 8, 8))
        ...     data = HDF5TrajectoryDataModule(f"{root}/flow.h5", "u", field_type=["vector"],
        ...                                     symmetry_group="D4", val_fraction=0.25,
        ...                                     test_fraction=0.25)
        ...     data.setup()
        >>> data.symmetry_group.name, data.in_channels, len(data.splits["train"])
        ('D4', 2, 2)

    Raises:
        FileNotFoundError: if the file does not exist.
        TypeError: for an option that neither the source nor the pipeline takes.
        ValueError: for a missing variable, field type or a mismatched channel count.
    """

    source_class = HDF5Source
