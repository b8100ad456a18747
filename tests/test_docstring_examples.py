"""Every ``Example:`` in the package's docstrings runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import symcoherence

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(symcoherence.__path__, prefix="symcoherence.")
    if not info.name.endswith(".__main__")  # importing it runs the command
)


@pytest.mark.parametrize("name", ["symcoherence", *MODULES])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
