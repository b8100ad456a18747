"""Shared test set-up: seeding and markers (declared in pyproject.toml)."""

import random

import numpy as np
import pytest
import torch

from symcoherence.testing import TOLERANCES


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
