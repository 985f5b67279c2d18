"""The [3d] extra is one set in three files: pyproject.toml names it, tools/setup_env.sh
installs it (mmdet3d and the devkits without their declared dependencies, then
tools/requirements-3d.txt), tools/constraints.txt pins every package of it."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NO_DEPS = re.compile(r'install -q -c "\$CONSTRAINTS" --no-deps (.+)$', re.M)


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(line: str) -> str:
    return canonical(re.split(r'[<>=!~;\[ ]', line.strip(), maxsplit=1)[0])


def test_extra_is_what_setup_env_installs_and_constraints_pin():
    extra = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
        'optional-dependencies']['3d']
    listed = [line for line in (ROOT / 'tools/requirements-3d.txt').read_text().splitlines()
              if line.strip() and not line.startswith('#')]
    no_deps = NO_DEPS.search((ROOT / 'tools/setup_env.sh').read_text()).group(1).split()
    installed = {canonical(n) for n in no_deps} | {requirement_name(line) for line in listed}
    assert {requirement_name(r) for r in extra} == installed
    assert 'mmdet3d' in installed and 'numba' in installed
    pins = {requirement_name(line) for line in (ROOT / 'tools/constraints.txt').read_text()
            .splitlines() if '==' in line and not line.startswith('#')}
    assert installed - pins == set()
