"""The architecture holds: imports point one way, no cycles, and the top-level import is light.

Layers (an arrow means "may import"):

    groups  <-  coherence  <-  callbacks  <-  cli
      ^            ^              ^           ^
    data (groups)            models (groups, coherence)
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.imports import find_cycle, import_graph

PACKAGE = Path(__file__).resolve().parents[1] / "symcoherence"

# what each part may import besides itself (the top-level package imports lazily, by name)
ALLOWED = {
    "groups": set(),
    "coherence": {"groups"},
    "testing": {"groups", "coherence"},
    "plotting": {"coherence"},
    "data": {"groups"},
    "models": {"groups", "coherence"},
    "callbacks": {"groups", "coherence", "plotting"},
    "cli": {"groups", "coherence", "callbacks", "plotting", "data", "models"},
}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "(top)"


def layer_violations(graph):
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if part(source) in ALLOWED
        and part(target) != part(source)
        and part(target) not in ALLOWED[part(source)]
        and part(target) != "(top)"
    )


def test_every_part_of_the_package_is_in_the_layer_table():
    parts = {part(module) for module in import_graph(PACKAGE)} - {"(top)"}
    assert parts == set(ALLOWED)


def test_imports_point_one_way_and_form_no_cycle():
    graph = import_graph(PACKAGE)
    assert layer_violations(graph) == []
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"a.py": "def f():\n    from pkg import b\n", "b.py": "from pkg.a import f\n"},
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        ({"a.py": "from . import b\n", "b.py": "from .c import x\n", "c.py": "import pkg.a\n"}, 4),
    ],
)
def test_the_cycle_check_finds_an_injected_cycle(tmp_path, files, expected):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        (package / name).write_text(text)
    cycle = find_cycle(import_graph(package))
    assert cycle is not None
    assert cycle == expected if isinstance(expected, list) else len(cycle) == expected


def test_the_layer_check_finds_an_injected_violation():
    graph = import_graph(PACKAGE)
    graph["symcoherence.groups.base"] = graph["symcoherence.groups.base"] | {
        "symcoherence.coherence.measurement"
    }
    assert ("symcoherence.groups.base", "symcoherence.coherence.measurement") in layer_violations(
        graph
    )


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


def test_groups_coherence_and_plotting_import_without_lightning():
    result = _run(
        """
        import symcoherence.groups, symcoherence.coherence, symcoherence.testing
        import symcoherence.plotting
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
