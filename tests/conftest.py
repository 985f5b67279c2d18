"""Shared fixtures for the test suite."""
from typing import List, Optional

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


def _xdist_group(item) -> Optional[str]:
    """The worker group of a test under ``--dist loadgroup``: the Slurm cluster's
    tests share one worker (one cluster per session); a test using a fixture of
    module (or class) scope, such as a trained run, shares its file's worker so
    the fixture is made once; any other test goes to whichever worker is free."""
    fixtures = getattr(item, '_fixtureinfo', None)
    if fixtures is None:
        return None
    if 'slurm_cluster' in fixtures.names_closure:
        return 'slurm-cluster'
    for definitions in fixtures.name2fixturedefs.values():
        if definitions[-1].scope in ('module', 'class', 'package'):
            return item.nodeid.split('::')[0]
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with its worker group (``_xdist_group``) for pytest-xdist's
    ``--dist loadgroup`` (tools/run_tests.sh), and hand out the longest first:
    the Slurm cluster's tests (minutes of waiting on Slurm, one worker), then the
    other slow ones, so that no long test starts last while the other workers
    idle."""
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))

    def start_rank(item) -> int:
        marker = item.get_closest_marker('xdist_group')
        if marker is not None and marker.args == ('slurm-cluster',):
            return 0
        return 1 if item.get_closest_marker('slow') else 2

    items.sort(key=start_rank)  # stable: file order within each rank
