"""A hash-keyed, atomic, resumable HDF5 cache of simulated trajectories (solver agnostic).

A dataset is fully described by a JSON-serializable ``config`` dict (solver, initial-condition and
forcing parameters, grid, number of trajectories, output times, ...; a
:class:`~symcoherence.data.GeneratedSource` builds it from its fields and :data:`CACHE_FORMAT`). Its
file name is ``{prefix}-{key}.h5`` with ``key = cache_key(config)``, the first 16 hex digits of the
SHA-256 of the canonical JSON of the config, so a different configuration never reuses a file.

API:

* :func:`cache_key`, :func:`cache_path`: where a configuration lives.
* :func:`ensure_cache` ``(cache_dir, config, generate, times=..., shape=..., field_type=...,
  diagnostic_group=...)``: return the path of a complete, validated file, generating it when
  missing or invalid.
  ``generate(start, count)`` returns trajectories ``start .. start + count - 1`` as an array or
  tensor of shape ``(count, T, C, H, W)``; it must be deterministic in ``start`` (seed each
  trajectory from its index) so that a resumed generation equals an uninterrupted one.
* :func:`load_trajectories` ``(path, config=None, shape=None)``: read and validate a file into
  :class:`CachedTrajectories` (numpy arrays, the field type, the rebuilt diagnostic group, the
  config).
* :func:`check_cache` ``(path, config=None, shape=None)``: the reason a file is unusable, or ``None``.

File layout: dataset ``trajectories`` ``(N, T, C, H, W)`` and ``times`` ``(T,)``; attributes
``config`` (canonical JSON) and one attribute ``param.{name}`` per top-level config entry,
``field_type`` (JSON of :meth:`FieldType.to_list`), ``diagnostic_group`` (JSON of
:meth:`Group.spec` of the group diagnostics measure by default, when there is one; the full symmetry
group of a flow can have ``8 n²`` elements and is not stored), ``symcoherence_version`` (provenance
only: a new release reads the caches of an old one),
``num_done`` (trajectories written so far), ``complete`` and ``sha256`` (of
the trajectory and time bytes). Guarantees:

* **Atomic**: data is written to ``{path}.tmp`` and renamed onto ``path`` only once complete, so a
  file at ``path`` is never partial.
* **Resumable**: chunks of ``chunk_size`` trajectories are flushed with ``num_done``; a restarted
  generation continues a temporary file with the same config and loses at most one chunk.
* **Validated**: on load the completeness flag, config (which holds the cache format version, so
  a layout change is another key), shape and checksum are
  compared; a mismatch regenerates (``on_mismatch="regenerate"``, logged) or raises ``ValueError``
  (``on_mismatch="raise"``) and is never silently used.
* **Finite**: a chunk containing NaN or Inf raises ``FloatingPointError`` before it is written.
* **Readers**: files are opened read-only, so any number of processes may read one concurrently.
  Two processes *generating* the same key at once are not supported (Lightning calls
  ``prepare_data`` on one process per node).

Example:
    >>> import tempfile, numpy as np
    >>> from symcoherence.groups import D4, FieldType
    >>> config = {"solver": "demo", "num_trajectories": 3}
    >>> make = lambda start, count: np.ones((count, 2, 1, 4, 4), np.float32)
    >>> with tempfile.TemporaryDirectory() as root:
    ...     path = ensure_cache(root, config, make, times=[0.0, 0.1], shape=(3, 2, 1, 4, 4),
    ...                         field_type=FieldType(["scalar"]), diagnostic_group=D4(),
    ...                         progress=False)
    ...     data = load_trajectories(path, config)
    >>> data.trajectories.shape, data.diagnostic_group.name
    ((3, 2, 1, 4, 4), 'D4')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

import symcoherence
from symcoherence.groups import FieldType, Group, from_spec

logger = logging.getLogger(__name__)

Generate = Callable[[int, int], "np.ndarray | torch.Tensor"]

CACHE_FORMAT = 2
"""Version of the file layout, part of every source's cache key (2: ``diagnostic_group``)."""


@dataclass
class CachedTrajectories:
    """A validated cache file read into memory.

    Attributes:
        trajectories: ``(N, T, C, H, W)`` array.
        times: ``(T,)`` output times.
        field_type: field type of one frame (``C`` channels).
        diagnostic_group: the group diagnostics measure by default, rebuilt with
            :func:`symcoherence.groups.from_spec`, or ``None`` if the file stores none.
        config: the configuration the file was generated from.
        path: where the file lives.
    """

    trajectories: np.ndarray
    times: np.ndarray
    field_type: FieldType
    diagnostic_group: Group | None
    config: dict[str, Any]
    path: Path


def _canonical(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"a cache config must be a JSON-serializable dict of plain values (str, int, float, "
            f"bool, None, lists, dicts) without NaN; got {dict(config)!r}: {error}"
        ) from error


def cache_key(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of ``sha256(canonical_json(config))``."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike, config: Mapping[str, Any], prefix: str) -> Path:
    """``cache_dir / f"{prefix}-{cache_key(config)}.h5"``."""
    return Path(cache_dir) / f"{prefix}-{cache_key(config)}.h5"


def _checksum(file: h5py.File) -> str:
    digest = hashlib.sha256()
    data = file["trajectories"]
    step = data.chunks[0] if data.chunks else 1
    for start in range(0, data.shape[0], step):
        digest.update(np.ascontiguousarray(data[start : start + step]).tobytes())
    digest.update(np.ascontiguousarray(file["times"][()]).tobytes())
    return digest.hexdigest()


def _mismatch(
    file: h5py.File, config: Mapping[str, Any] | None, shape: Sequence[int] | None
) -> str | None:
    attrs = file.attrs
    if not bool(attrs.get("complete", False)):
        return "it is marked incomplete"
    if "trajectories" not in file or "times" not in file or "config" not in attrs:
        return "it lacks the trajectories/times datasets or the config attribute"
    if config is not None and attrs["config"] != _canonical(config):
        return f"its config {attrs['config']} differs from the requested {_canonical(config)}"
    if shape is not None and tuple(file["trajectories"].shape) != tuple(shape):
        return f"its shape {tuple(file['trajectories'].shape)} differs from {tuple(shape)}"
    if attrs.get("sha256") != _checksum(file):
        return "its sha256 checksum does not match its contents (corrupted)"
    return None


def check_cache(
    path: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    shape: Sequence[int] | None = None,
) -> str | None:
    """Why the file at ``path`` cannot be used for ``config``/``shape``, or ``None`` if it can."""
    try:
        with h5py.File(path, "r") as file:
            return _mismatch(file, config, shape)
    except OSError as error:
        return f"it cannot be read as HDF5 ({error})"


def load_trajectories(
    path: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    shape: Sequence[int] | None = None,
) -> CachedTrajectories:
    """Read a cache file after validating it (see the module docstring).

    Raises:
        ValueError: if the file is incomplete, corrupted, or does not match ``config``/``shape``.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            reason = _mismatch(file, config, shape)
            if reason is None:
                return CachedTrajectories(
                    trajectories=file["trajectories"][()],
                    times=file["times"][()],
                    field_type=FieldType(json.loads(file.attrs["field_type"])),
                    diagnostic_group=(
                        from_spec(json.loads(file.attrs["diagnostic_group"]))
                        if "diagnostic_group" in file.attrs
                        else None
                    ),
                    config=json.loads(file.attrs["config"]),
                    path=path,
                )
    except OSError as error:
        reason = f"it cannot be read as HDF5 ({error})"
    raise ValueError(
        f"cache file {path} cannot be used: {reason}. Delete it to regenerate, or pass the "
        "config it was generated with"
    )


def _open_temporary(
    temporary: Path, config: Mapping[str, Any], shape: tuple[int, ...], chunk_size: int, dtype: str
) -> h5py.File:
    """Reopen a compatible partial file to resume it, else start a fresh one."""
    if temporary.exists():
        try:
            file = h5py.File(temporary, "r+")
            data = file.get("trajectories")
            if (
                file.attrs.get("config") == _canonical(config)
                and data is not None
                and tuple(data.shape) == shape
                and data.dtype == np.dtype(dtype)
            ):
                logger.info("resuming %s at trajectory %d", temporary, file.attrs["num_done"])
                return file
            file.close()
        except OSError:
            logger.warning("discarding unreadable partial cache file %s", temporary)
        temporary.unlink()
    file = h5py.File(temporary, "w")
    file.create_dataset("trajectories", shape=shape, dtype=dtype, chunks=(chunk_size, *shape[1:]))
    file.attrs["config"] = _canonical(config)
    file.attrs["num_done"] = 0
    file.attrs["complete"] = False
    return file


def ensure_cache(
    cache_dir: str | os.PathLike,
    config: Mapping[str, Any],
    generate: Generate,
    *,
    times: Sequence[float] | np.ndarray,
    shape: Sequence[int],
    field_type: FieldType,
    diagnostic_group: Group | None = None,
    prefix: str = "trajectories",
    chunk_size: int = 8,
    dtype: str = "float32",
    on_mismatch: str = "regenerate",
    progress: bool = True,
) -> Path:
    """Return the path of a valid cache file for ``config``, generating it chunk by chunk if needed.

    Args:
        cache_dir: directory of cache files (created if missing).
        config: JSON-serializable description of everything that determines the data.
        generate: ``generate(start, count) -> (count, T, C, H, W)`` array or tensor.
        times: ``(T,)`` output times stored next to the trajectories.
        shape: ``(N, T, C, H, W)`` of the whole dataset.
        field_type: field type of one frame; ``C`` must equal ``field_type.num_channels``.
        diagnostic_group: the group diagnostics measure by default, stored as its ``spec()``.
        prefix: file-name prefix (e.g. ``"navier_stokes"``).
        chunk_size: trajectories per ``generate`` call (the most an interruption loses).
        dtype: on-disk dtype.
        on_mismatch: ``"regenerate"`` an invalid file, or ``"raise"`` a ``ValueError``.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: on inconsistent arguments, or an invalid file with ``on_mismatch="raise"``.
        FloatingPointError: if ``generate`` returns NaN/Inf (nothing of that chunk is written).
    """
    shape = tuple(int(s) for s in shape)
    times = np.asarray(times, dtype=np.float64)
    if on_mismatch not in ("regenerate", "raise"):
        raise ValueError(f"on_mismatch must be 'regenerate' or 'raise', got {on_mismatch!r}")
    if len(shape) != 5 or shape[1] != times.shape[0] or shape[2] != field_type.num_channels:
        raise ValueError(
            f"shape must be (N, T, C, H, W) with T = len(times) = {times.shape[0]} and "
            f"C = {field_type.num_channels} for {field_type!r}; got {shape}"
        )
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    path = cache_path(cache_dir, config, prefix)
    if path.exists():
        reason = check_cache(path, config, shape)
        if reason is None:
            return path
        if on_mismatch == "raise":
            raise ValueError(f"cache file {path} cannot be used: {reason}; delete it to regenerate")
        logger.warning("regenerating cache file %s: %s", path, reason)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    chunk_size = min(chunk_size, shape[0])
    try:
        with _open_temporary(temporary, config, shape, chunk_size, dtype) as file:
            done = int(file.attrs["num_done"])
            with tqdm(
                total=shape[0], initial=done, desc=path.name, unit="traj", disable=not progress
            ) as bar:
                while done < shape[0]:
                    count = min(chunk_size, shape[0] - done)
                    chunk = generate(done, count)
                    if isinstance(chunk, torch.Tensor):
                        chunk = chunk.detach().cpu().numpy()
                    chunk = np.asarray(chunk)
                    if chunk.shape != (count, *shape[1:]):
                        raise ValueError(
                            f"generate({done}, {count}) returned shape {chunk.shape}; expected "
                            f"{(count, *shape[1:])}"
                        )
                    if not np.isfinite(chunk).all():
                        raise FloatingPointError(
                            f"generate({done}, {count}) returned NaN or Inf values; nothing of this "
                            "chunk was written. Reduce the time step or the amplitude"
                        )
                    file["trajectories"][done : done + count] = chunk
                    done += count
                    file.attrs["num_done"] = done
                    file.flush()
                    bar.update(count)
            if "times" in file:
                del file["times"]
            file.create_dataset("times", data=times)
            for name, value in config.items():
                file.attrs[f"param.{name}"] = json.dumps(value, sort_keys=True)
            file.attrs["field_type"] = json.dumps(field_type.to_list())
            if diagnostic_group is not None:
                file.attrs["diagnostic_group"] = json.dumps(diagnostic_group.spec())
            file.attrs["symcoherence_version"] = symcoherence.__version__
            file.attrs["sha256"] = _checksum(file)
            file.attrs["complete"] = True
    except (FloatingPointError, ValueError):
        temporary.unlink(missing_ok=True)  # a resumed run would fail the same way; Ctrl-C keeps it
        raise
    os.replace(temporary, path)
    return path


def cache_source(
    source: Any,
    cache_dir: str | os.PathLike,
    produce: Callable[[int, int], np.ndarray],
    *,
    chunk_size: int,
    progress: bool,
) -> Path:
    """:func:`ensure_cache` for a trajectory source: its key, frame times, shape and declarations.

    Args:
        source: a source with ``cache_config()``, ``cache_prefix``, ``times``, ``shape``,
            ``field_type`` and ``diagnostic_group``.
        cache_dir: directory of the cache.
        produce: ``(start, count) -> (count, T, C, H, W)`` trajectories.
        chunk_size: trajectories per call of ``produce`` and per written chunk.
        progress: show a progress bar.
    """
    return ensure_cache(
        cache_dir,
        source.cache_config(),
        produce,
        times=source.times,
        shape=source.shape,
        field_type=source.field_type,
        diagnostic_group=source.diagnostic_group,
        prefix=source.cache_prefix,
        chunk_size=chunk_size,
        progress=progress,
    )


def load_source(source: Any, cache_dir: str | os.PathLike) -> np.ndarray:
    """A source's validated cached trajectories ``(N, T, C, H, W)``."""
    config = source.cache_config()
    path = cache_path(cache_dir, config, source.cache_prefix)
    return load_trajectories(path, config, source.shape).trajectories
