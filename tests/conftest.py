"""Shared test set-up: seeding, markers (declared in pyproject.toml) and optional dependencies.

Optional dependencies: a test that needs a package from one of the extras (pyproject.toml) is
skipped, with the extra to install in the reason, when that package is not installed:

* tests that need torch-harmonics get the ``sphere`` marker (listed in ``SPHERE_TESTS`` below, or
  marked ``@pytest.mark.sphere`` in the test file) and are skipped before they run;
* as a safety net, a test module or test that fails with ``ModuleNotFoundError`` for a missing
  optional package (``OPTIONAL``) is reported as skipped instead, with the same reason.

"Core tests" are the suite without the ``sphere`` tests: plain ``python -m pytest`` where
torch-harmonics is not installed (``pip install -e ".[test-core]"``, any torch in the core range),
or ``python -m pytest -m "not sphere and not slow and not gpu"`` in any environment (a ``-m`` on the
command line replaces the default ``-m 'not slow and not gpu'`` of pyproject.toml).
``pip install -e ".[test]"`` installs everything, and then every test runs.
"""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

from symcoherence.testing import TOLERANCES

# importable name -> extra of pyproject.toml that installs it
OPTIONAL = {
    "torch_harmonics": "sphere",
    "h5py": "data",
    "tqdm": "data",
    "jsonargparse": "cli",
    "yaml": "cli",
}

# tests that need torch-harmonics: a whole file, a test (all its parameters) or one parameter set
_DOCTESTS = "test_docstring_examples.py::test_docstring_examples_run"
SPHERE_TESTS = frozenset(
    {
        "test_sfno.py",
        "test_shallow_water_solver.py",
        "test_shallow_water_datamodule.py",
        "test_sphere_config.py",
        "test_install.py::test_torch_harmonics_round_trip_of_a_band_limited_field",
        "test_data_sources.py::test_generated_sources_declare_full_and_diagnostic_groups",
        "test_configs.py::test_config_instantiates[sphere_sfno]",
        # docstring examples that build an SFNO or a shallow-water source
        f"{_DOCTESTS}[symcoherence.models.sfno]",
        f"{_DOCTESTS}[symcoherence.data.presets]",
        f"{_DOCTESTS}[symcoherence.data.shallow_water.solver]",
        f"{_DOCTESTS}[symcoherence.data.shallow_water.source]",
    }
)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


MISSING = {module: extra for module, extra in OPTIONAL.items() if not _installed(module)}


def _reason(module: str) -> str:
    extra = OPTIONAL[module]
    return f"needs {module} (not installed): pip install 'symcoherence[{extra}]'"


def _missing_module(error: BaseException | None) -> str | None:
    """The missing optional package behind ``error`` (or an exception it was raised from)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ModuleNotFoundError) and error.name:
            root = error.name.split(".")[0]
            if root in MISSING:
                return root
        error = error.__cause__ or error.__context__
    return None


def _is_sphere_test(item: pytest.Item) -> bool:
    path = item.path.name
    names = {path, f"{path}::{item.name}", f"{path}::{getattr(item, 'originalname', item.name)}"}
    return not names.isdisjoint(SPHERE_TESTS)


def pytest_configure(config):
    # A filter that names a warning class of an optional package can only be set where it is
    # installed (pytest stops at start-up on one it cannot import).
    if "jsonargparse" not in MISSING:
        config.addinivalue_line(
            "filterwarnings", "ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning"
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_sphere_test(item):
            item.add_marker(pytest.mark.sphere)
        if "torch_harmonics" in MISSING and item.get_closest_marker("sphere"):
            item.add_marker(pytest.mark.skip(reason=_reason("torch_harmonics")))


class _OptionalDependencyModule(pytest.Module):
    """A test module whose import fails on a missing optional package is skipped, not an error."""

    skip_reason: str | None = None

    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as error:
            module = _missing_module(error.__cause__)
            if module is None:
                raise
            self.skip_reason = _reason(module)
            pytest.skip(self.skip_reason, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if MISSING:
        return _OptionalDependencyModule.from_parent(parent, path=module_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    reason = getattr(collector, "skip_reason", None)
    if report.skipped and reason:  # name the test module, not this file, as the skipped one
        report.longrepr = (str(collector.path), None, "Skipped: " + reason)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if MISSING and report.failed and call.when in ("setup", "call") and call.excinfo is not None:
        module = _missing_module(call.excinfo.value)
        if module is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, "Skipped: " + _reason(module))
    return report


@pytest.fixture(autouse=True)
def _one_thread():
    """Test tensors are tiny: intra-op threads only add overhead, and on a busy 2-core machine a
    second spinning thread per process made such ops 30-100x slower (measured). Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state, and leaves none behind for the next."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds the global RNG that third-party code may use
    torch.manual_seed(0)
    yield


@pytest.fixture
def tol():
    return TOLERANCES
