"""The package's and tools/'s import graphs have no cycles; docstring examples run as written."""
import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'mmdet_polyloss'
TOOLS = PACKAGE.parent / 'tools'


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, lazy
    imports included), from the source text."""
    modules = {module_name(p, root): p for p in root.rglob('*.py')}
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                    base = '.'.join(anchor + ([base] if base else []))
                # `from x import y`: y may be a submodule of x, or a name in x.
                targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules
                           else base for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every cycle found by a depth-first search (each reported once per entry)."""
    cycles, state = [], {}  # state: 1 on the stack, 2 done

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert 'mmdet_polyloss.functional.fused' in graph  # the graph was read at all
    assert 'mmdet_polyloss.functional.reference' in graph['mmdet_polyloss.functional.fused']
    assert find_cycles(graph) == []


def test_tools_have_no_import_cycle():
    """tools/ as the package: the sweep's run module below its launchers and report, the
    train/test command line below the tools."""
    graph = import_graph(TOOLS)
    assert 'tools.lib.sweep.run' in graph['tools.lib.sweep.local']  # the graph was read at all
    assert 'tools.lib.sweep.run' in graph['tools.lib.sweep.task']
    assert find_cycles(graph) == []


def test_cycle_finder_sees_a_cycle_through_a_lazy_import(tmp_path):
    """The check itself can fail: the shape of the old fused <-> poly_focal cycle."""
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('from .api import f\n')
    (pkg / 'api.py').write_text('from .fast import g\n\ndef f():\n    return g()\n')
    (pkg / 'fast.py').write_text('def g():\n    from .api import f\n    return f\n')
    cycles = find_cycles(import_graph(pkg))
    assert cycles == [['pkg.api', 'pkg.fast', 'pkg.api']]


def test_functional_layer_imports_nothing_from_mmdet_or_mmengine():
    """The pure-PyTorch API stays usable without mmdet."""
    for path in (PACKAGE / 'functional').glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split('.')[0] in ('mmdet', 'mmengine', 'mmcv') for n in names), \
                f'{path.name} imports {names}'


def imported_names(path: Path) -> List[str]:
    """Absolute module names ``path`` imports (relative imports left out)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or '')
    return names


def test_only_the_det3d_subpackage_imports_mmdet3d():
    """mmdet3d is an optional extra: the rest of the package never needs it, and
    nothing outside ``det3d/`` imports ``det3d``."""
    det3d = PACKAGE / 'det3d'
    assert (det3d / 'heads.py').exists()
    for path in PACKAGE.rglob('*.py'):
        if det3d in path.parents:
            continue
        names = imported_names(path)
        assert not any(n.split('.')[0] == 'mmdet3d' for n in names), f'{path} imports mmdet3d'
        assert not any(n.startswith('mmdet_polyloss.det3d') for n in names), path
    graph = import_graph(PACKAGE)
    outside = [m for m, targets in graph.items() if not m.startswith('mmdet_polyloss.det3d')
               and any(t.startswith('mmdet_polyloss.det3d') for t in targets)]
    assert outside == []


def test_package_imports_with_mmdet3d_blocked():
    """``import mmdet_polyloss`` works where mmdet3d cannot be imported (a None in
    sys.modules makes its import fail); only the det3d subpackage then refuses."""
    code = (
        "import sys\n"
        "sys.modules['mmdet3d'] = None\n"
        "import mmdet_polyloss\n"
        "assert not any(m.startswith(('mmdet3d', 'mmdet_polyloss.det3d')) for m in sys.modules"
        " if sys.modules[m] is not None), sorted(sys.modules)\n"
        "try:\n"
        "    import mmdet_polyloss.det3d\n"
        "except ImportError as error:\n"
        "    print('refused:', error)\n")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refused: mmdet_polyloss.det3d needs mmdet3d" in result.stdout


DOCUMENTED = ['mmdet_polyloss.functional.poly_focal',
              'mmdet_polyloss.functional.poly_cross_entropy',
              'mmdet_polyloss.functional.reference',
              'mmdet_polyloss.losses.poly_focal_loss',
              'mmdet_polyloss.losses.poly_cross_entropy_loss']


@pytest.mark.parametrize('name', DOCUMENTED)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f'{name} has no example'
    assert result.failed == 0


#: Most lines of code (not blank, not a comment) a file in the package or tools/ may have.
MAX_LINES_OF_CODE = 450


def lines_of_code(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith('#'))


def test_no_file_is_too_long_to_read():
    root = PACKAGE.parent
    files = [p for folder in ('mmdet_polyloss', 'tools') for pattern in ('*.py', '*.sh')
             for p in (root / folder).rglob(pattern)]
    assert len(files) > 20
    too_long = {str(p.relative_to(root)): n for p in files
                if (n := lines_of_code(p)) > MAX_LINES_OF_CODE}
    assert too_long == {}


def test_test_files_have_unique_names():
    """pytest imports test files by basename (no __init__.py): two of one name
    stop the whole collection."""
    names = [p.name for p in (PACKAGE.parent / 'tests').rglob('test_*.py')]
    assert len(names) > 30
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
