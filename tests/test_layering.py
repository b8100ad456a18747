"""The architecture holds: imports point one way, no cycles, and the top-level import is light.

Layers (an arrow means "may import"):

    groups  <-  coherence  <-  callbacks  <-  cli
      ^            ^              ^           ^
    data (groups)            models (groups, coherence)

Inside ``coherence``, three rooms under the measurement (the modules at its top level):

    coherence.gradients  <-  coherence.metrics
    coherence.statistics
              ^  (all three)
    coherence (spec, measure, orbit_influence, result, forward errors)
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.imports import find_cycle, import_graph

PACKAGE = Path(__file__).resolve().parents[1] / "symcoherence"

ROOMS = ("coherence.gradients", "coherence.metrics", "coherence.statistics")
COHERENCE = {"coherence", *ROOMS}

# what each part may import besides itself (the top-level package imports lazily, by name); a part
# that may import "coherence" may import its rooms too
ALLOWED = {
    "groups": set(),
    "coherence.gradients": set(),
    "coherence.metrics": {"coherence.gradients"},
    "coherence.statistics": set(),
    "coherence": {"groups", *ROOMS},
    "testing": {"groups", "coherence"},
    "plotting": {"coherence"},
    "data": {"groups"},
    "models": {"groups", "coherence"},
    "callbacks": {"groups", "coherence", "plotting"},
    "cli": {"groups", "coherence", "callbacks", "plotting", "data", "models"},
}


def part(module: str) -> str:
    pieces = module.split(".")
    if len(pieces) > 2 and ".".join(pieces[1:3]) in ROOMS:
        return ".".join(pieces[1:3])
    return pieces[1] if len(pieces) > 1 else "(top)"


def allowed(source: str) -> set[str]:
    parts = ALLOWED[source]
    return parts | set(ROOMS) if "coherence" in parts else parts


def layer_violations(graph):
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if part(source) in ALLOWED
        and part(target) != part(source)
        and part(target) not in allowed(part(source))
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


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("symcoherence.groups.base", "symcoherence.coherence.measurement"),
        # a room importing the measurement above it, or a room it does not build on
        ("symcoherence.coherence.gradients.functional", "symcoherence.coherence.spec"),
        ("symcoherence.coherence.gradients.projection", "symcoherence.coherence.metrics.diagonal"),
        ("symcoherence.coherence.statistics.summary", "symcoherence.coherence.metrics.base"),
        ("symcoherence.coherence.metrics.base", "symcoherence.coherence.statistics.keys"),
    ],
)
def test_the_layer_check_finds_an_injected_violation(source, target):
    graph = import_graph(PACKAGE)
    assert (source, target) not in layer_violations(graph)
    graph[source] = graph[source] | {target}
    assert (source, target) in layer_violations(graph)


def test_coherence_has_its_three_rooms_and_the_measurement():
    parts = {part(module) for module in import_graph(PACKAGE)}
    assert COHERENCE <= parts
    # the rooms hold their own modules, not the measurement's
    graph = import_graph(PACKAGE)
    assert "symcoherence.coherence.gradients.layer_hooks" in graph
    assert "symcoherence.coherence.metrics.gauss_newton" in graph
    assert "symcoherence.coherence.statistics.summary" in graph
    assert part("symcoherence.coherence.measurement") == "coherence"


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
