"""Packaging: one version, a torch range in the core requirement, and a callback that needs no extra.

`tests/test_layering.py` checks that the top-level import is light; this file checks what an install
promises: the version comes from the package metadata, the core requirement admits the torch that is
installed, torch-harmonics is only in the ``sphere`` extra (pinned with the torch it was built for),
and the monitor runs a Lightning fit, figures included, with every optional package blocked.
"""

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import symcoherence

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def _requirements(entries):
    requirements = pytest.importorskip("packaging.requirements")
    return {req.name: req for req in map(requirements.Requirement, entries)}


def test_the_version_is_the_package_metadata():
    assert symcoherence.__version__ == importlib.metadata.version("symcoherence")
    assert symcoherence.__version__ == _pyproject()["version"]


def test_the_version_falls_back_when_the_package_is_not_installed():
    code = textwrap.dedent(
        """
        import importlib.metadata

        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        importlib.metadata.version = not_installed
        import symcoherence
        print(symcoherence.__version__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0+unknown"


def test_core_requirement_is_a_torch_range_that_admits_the_installed_torch():
    core = _requirements(_pyproject()["dependencies"])
    torch_range = core["torch"].specifier
    assert not any(spec.operator in ("==", "===") for spec in torch_range), torch_range
    assert torch.__version__.split("+")[0] in torch_range
    assert "torch-harmonics" not in core


def test_torch_harmonics_is_in_the_sphere_extra_pinned_with_its_torch():
    project = _pyproject()
    sphere = _requirements(project["optional-dependencies"]["sphere"])
    assert str(sphere["torch-harmonics"].specifier).startswith("==")
    # its compiled extensions are bound to one torch minor version: the extra bounds torch on both
    # sides (the core range alone would admit a torch it fails to import beside)
    operators = {spec.operator for spec in sphere["torch"].specifier}
    assert operators & {">=", ">", "~=", "=="} and operators & {"<", "<=", "~=", "=="}, operators


BLOCKED = ("torch_harmonics", "h5py", "jsonargparse")

CORE_FIT = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, {tests!r})

    import torch
    from lightning.pytorch.loggers import TensorBoardLogger
    from helpers.tiny import TinyData, TinyModule, trainer

    import symcoherence as sc

    torch.set_num_threads(1)
    monitor = sc.OrbitCoherenceMonitor(every_n_train_steps=2, probe_size=4)
    logger = TensorBoardLogger({save_dir!r}, name="core")
    trainer([monitor], logger=logger, max_epochs=1).fit(TinyModule(), datamodule=TinyData())
    logger.experiment.flush()
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    assert not loaded, loaded
    assert "matplotlib" in sys.modules  # the figures were drawn
    """
)


def test_the_monitor_runs_a_fit_with_every_optional_package_blocked(tmp_path):
    code = CORE_FIT.format(blocked=BLOCKED, tests=str(TESTS), save_dir=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(tmp_path.glob("core/version_0/events.out.tfevents.*"))
