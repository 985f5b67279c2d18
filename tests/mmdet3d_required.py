"""mmdet3d for the 3D tests (tests/det3d/): a skip saying why where it is not installed,
a failure with ``CI=true`` (CI installs the [3d] extra, so its 3D tests must run)."""
import importlib
import os
from types import ModuleType

import pytest

REASON = "mmdet3d is not installed (pip install '.[3d]', or bash tools/setup_env.sh)"


def import_mmdet3d() -> ModuleType:
    try:
        return importlib.import_module('mmdet3d')
    except ImportError as error:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'CI=true, and mmdet3d cannot be imported: {error}', pytrace=False)
        pytest.skip(f'{REASON}: {error}', allow_module_level=True)
