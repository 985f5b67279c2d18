"""Shared fixtures for the test suite."""
from typing import List

import pytest
import torch

DEVICES: List[str] = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every test that takes ``device`` runs on CPU, and on CUDA when present."""
    return request.param


@pytest.fixture(scope='session')
def slurm_cluster():
    """A real single-node Slurm cluster (tests/slurm_cluster.py) for the session.

    Skips, saying why, where it cannot run (Slurm missing and no root to install
    it); with CI=true that is a failure instead: CI must run these tests.
    """
    from slurm_cluster import start_for_tests
    cluster = start_for_tests()
    try:
        yield cluster
    finally:
        cluster.stop()
