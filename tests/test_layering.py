"""Imports point one way: groups <- coherence <- callback <- cli; the top-level import stays light."""

import subprocess
import sys
import textwrap

BLOCK_LIGHTNING = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("lightning", "pytorch_lightning"):
                raise ImportError(f"{name} is blocked for this layering test")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LIGHTNING + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_groups_and_coherence_import_without_lightning():
    result = _run(
        """
        import symcoherence.groups, symcoherence.coherence, symcoherence.testing
        import sys
        loaded = [m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning")]
        assert not loaded, loaded
        """
    )
    assert result.returncode == 0, result.stderr


def test_the_blocker_itself_works():
    result = _run("import lightning")
    assert result.returncode != 0 and "blocked for this layering test" in result.stderr


def test_top_level_import_is_light():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, symcoherence, symcoherence.groups; "
            "heavy = [m for m in ('torch_harmonics', 'matplotlib', 'lightning', 'h5py') "
            "if m in sys.modules]; print(heavy); assert not heavy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
