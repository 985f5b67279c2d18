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


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (tools/run_tests.sh): each test
    file's tests run in one worker (its module fixtures, such as a trained run,
    are made once), and every test that uses the Slurm cluster runs in the same
    worker, so the session starts one cluster, not one per worker."""
    for item in items:
        group = ('slurm-cluster' if 'slurm_cluster' in getattr(item, 'fixturenames', ())
                 else item.nodeid.split('::')[0])
        item.add_marker(pytest.mark.xdist_group(group))
