"""Shared test set-up: seeding, the tolerance table and markers (declared in pyproject.toml)."""

import random

import numpy as np
import pytest
import torch

# The tolerance table. Every numerical comparison in the suite uses one of these rows; loosening one
# for a single test needs a comment at that test saying why.
#   exact: permutations with signs (group actions, integer rolls) must match bit for bit.
#   fp64:  float64 computations that differ only in the order of floating-point operations.
#   fp32:  float32 computations that differ only in the order of floating-point operations.
TOL = {
    "exact": {"rtol": 0.0, "atol": 0.0},
    "fp64": {"rtol": 1e-10, "atol": 1e-12},
    "fp32": {"rtol": 1e-5, "atol": 1e-6},
}


def tol_for(dtype: torch.dtype) -> dict:
    """The fp row matching ``dtype``."""
    return TOL["fp64"] if dtype == torch.float64 else TOL["fp32"]


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
    return TOL
