"""Shared fixtures for the test suite."""
from typing import List

import pytest
import torch

DEVICES: List[str] = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every test that takes ``device`` runs on CPU, and on CUDA when present."""
    return request.param
