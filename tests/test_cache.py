import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from symcoherence.data.cache import (
    cache_key,
    cache_path,
    check_cache,
    ensure_cache,
    load_trajectories,
)
from symcoherence.groups import D4, FieldType, Product, Shifts

SHAPE = (10, 3, 2, 6, 6)
TIMES = [0.0, 0.5, 1.0]
FIELD = FieldType(["vector"])
CONFIG = {"solver": "test", "n": 6, "num_trajectories": 10, "nested": {"a": [1, 2]}}


def make(start, count):
    """Deterministic in the trajectory index, as ensure_cache requires."""
    index = np.arange(start, start + count, dtype=np.float32)
    return np.broadcast_to(index[:, None, None, None, None], (count, *SHAPE[1:])).copy()


def build(root, generate=make, config=CONFIG, **kwargs):
    kwargs.setdefault("chunk_size", 4)
    return ensure_cache(
        root,
        config,
        generate,
        times=TIMES,
        shape=SHAPE,
        field_type=FIELD,
        diagnostic_group=kwargs.pop("diagnostic_group", D4()),
        progress=False,
        **kwargs,
    )


def test_key_is_order_independent_and_config_sensitive(tmp_path):
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_path(tmp_path, {"a": 1}, "ns").name == f"ns-{cache_key({'a': 1})}.h5"
    with pytest.raises(TypeError, match="JSON-serializable"):
        cache_key({"a": object()})


def test_round_trip_stores_everything(tmp_path):
    group = Product(D4(), Shifts(box=1, period=6))
    path = build(tmp_path, diagnostic_group=group)
    data = load_trajectories(path, CONFIG, SHAPE)
    np.testing.assert_array_equal(data.trajectories, make(0, 10))
    np.testing.assert_array_equal(data.times, TIMES)
    assert data.field_type == FIELD
    assert data.diagnostic_group.spec() == group.spec()
    assert data.config == CONFIG
    with h5py.File(path, "r") as file:
        assert json.loads(file.attrs["param.nested"]) == {"a": [1, 2]}
        assert file.attrs["param.n"] == "6"
        assert file.attrs["symcoherence_version"]
    assert not path.with_name(path.name + ".tmp").exists()
    # without a diagnostic group the file stores none
    bare = build(tmp_path / "bare", diagnostic_group=None)
    assert load_trajectories(bare).diagnostic_group is None
    # a second call finds the file and does not generate
    assert build(tmp_path, generate=lambda s, c: pytest.fail("regenerated")) == path


def test_interrupted_write_leaves_no_final_file_and_resumes(tmp_path):
    calls = []

    def failing(start, count):
        calls.append(start)
        if start >= 8:
            raise KeyboardInterrupt
        return make(start, count)

    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, generate=failing)
    path = cache_path(tmp_path, CONFIG, "trajectories")
    assert not path.exists()
    temporary = path.with_name(path.name + ".tmp")
    with h5py.File(temporary, "r") as file:
        assert file.attrs["num_done"] == 8 and not file.attrs["complete"]
    assert check_cache(temporary) == "it is marked incomplete"

    resumed = []
    build(tmp_path, generate=lambda s, c: resumed.append(s) or make(s, c))
    assert resumed == [8]  # only the lost chunk is generated again
    np.testing.assert_array_equal(load_trajectories(path).trajectories, make(0, 10))


def test_corrupted_values_are_detected_and_regenerated(tmp_path):
    path = build(tmp_path)
    with h5py.File(path, "r+") as file:
        file["trajectories"][3, 1, 0, 2, 2] = 123.0
    assert "checksum" in check_cache(path, CONFIG, SHAPE)
    with pytest.raises(ValueError, match="checksum"):
        load_trajectories(path)
    with pytest.raises(ValueError, match="checksum"):
        build(tmp_path, on_mismatch="raise")
    build(tmp_path)  # regenerates
    np.testing.assert_array_equal(load_trajectories(path).trajectories, make(0, 10))


def test_truncated_file_is_detected(tmp_path):
    path = build(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert "cannot be read" in check_cache(path)
    build(tmp_path)
    assert check_cache(path, CONFIG, SHAPE) is None


def test_mismatched_config_shape_and_version(tmp_path):
    path = build(tmp_path)
    assert "config" in check_cache(path, {**CONFIG, "n": 7})
    assert "shape" in check_cache(path, CONFIG, (10, 3, 2, 6, 7))
    with pytest.raises(ValueError, match="differs"):
        load_trajectories(path, {**CONFIG, "n": 7})
    with h5py.File(path, "r+") as file:  # another release reads the file (the format is in the key)
        file.attrs["symcoherence_version"] = "0.0.0"
    assert check_cache(path, CONFIG, SHAPE) is None


def test_non_finite_chunk_never_reaches_a_file(tmp_path):
    def exploding(start, count):
        chunk = make(start, count)
        if start >= 4:
            chunk[0, -1] = np.nan
        return chunk

    with pytest.raises(FloatingPointError, match="NaN"):
        build(tmp_path, generate=exploding)
    path = cache_path(tmp_path, CONFIG, "trajectories")
    assert not path.exists()
    # a resumed run would hit the same NaN: no temporary file is left behind (an interruption,
    # above, keeps its file to resume)
    assert list(tmp_path.rglob("*.tmp")) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="C = 2"):
        ensure_cache(
            tmp_path,
            CONFIG,
            make,
            times=TIMES,
            shape=(10, 3, 1, 6, 6),
            field_type=FIELD,
            diagnostic_group=D4(),
            progress=False,
        )
    with pytest.raises(ValueError, match="returned shape"):
        build(tmp_path, generate=lambda s, c: np.zeros((c, 3, 2, 6, 5)))
    with pytest.raises(ValueError, match="on_mismatch"):
        build(tmp_path, on_mismatch="ignore")


def test_concurrent_readers(tmp_path):
    path = build(tmp_path)
    reader = textwrap.dedent(
        f"""
        import h5py, time
        with h5py.File({str(path)!r}, "r") as file:
            time.sleep(1.0)
            print(float(file["trajectories"][9].mean()))
        """
    )
    with h5py.File(path, "r"):  # the parent keeps the file open while two children read it
        children = [
            subprocess.Popen([sys.executable, "-c", reader], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        data = load_trajectories(path, CONFIG, SHAPE)
        outputs = [child.communicate(timeout=120)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert [float(out) for out in outputs] == [9.0, 9.0]
    assert data.trajectories[9].mean() == 9.0
