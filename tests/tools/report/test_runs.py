"""Reading work dirs (tools.lib.sweep.report.runs): the dumped config is read
as data and never run; loss names and defaults come from the loss classes."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.lib.sweep.report import SweepReportError, build_report, load_run
from tools.lib.sweep.report.runs import _newest_first, parse_dumped_config, poly_losses

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / 'tools' / 'sweep_report.py'
DEMO_CONFIG = ROOT / 'configs' / 'demo' / 'retinanet_tiny_fpn_poly1-eps-1_shapes.py'


def work_dir(root: Path, name: str, config: str, ap: float = 0.3) -> Path:
    """A finished sweep run (its marker says tested) whose final checkpoint's test
    logged ``ap``, with ``config`` as the run's dumped config."""
    work = root / name
    vis = work / '20260101_120000' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(json.dumps(dict(loss=1.0, step=1)) + '\n')
    (vis / 'config.py').write_text(config)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    (work / '.sweep-run.json').write_text('{"key": "k", "state": "tested"}')
    test = work / '20260101_130000'
    (test / 'vis_data').mkdir(parents=True)
    (test / f'{test.name}.json').write_text(json.dumps({'coco/bbox_mAP': ap}))
    (test / 'vis_data' / 'config.py').write_text(
        f'{config.rstrip()}\nload_from = {str(work / "epoch_1.pth")!r}\n')
    return work


def parse_text(tmp_path: Path, text: str) -> dict:
    path = tmp_path / 'config.py'
    path.write_text(text)
    return parse_dumped_config(path)


# ------------------------------------------------------------ plain values

def test_plain_values_are_read(tmp_path):
    text = '\n'.join([
        "model = dict(type='RetinaNet', bbox_head=dict(loss_cls=dict(",
        "    type='Poly1FocalLoss', epsilon=-1.0, alpha=+0.25)), ratios=(0.5, 1.0))",
        "odd_keys = dict({'a.b': 1, 2: 'two'}, c=[dict(x=None), (True, False)])",
        "literal = {'k': [1, -2], 's': {3}, 'b': b'xy', 'e': ()}",
        'numbers = [inf, -inf, (1 + 2j), (-1.5 - 0.5j), 0x10]',
        'empty = dict()',
        "empty = 'last assignment wins'",
    ])
    assert parse_text(tmp_path, text) == {
        'model': {'type': 'RetinaNet', 'ratios': (0.5, 1.0), 'bbox_head': {
            'loss_cls': {'type': 'Poly1FocalLoss', 'epsilon': -1.0, 'alpha': 0.25}}},
        'odd_keys': {'a.b': 1, 2: 'two', 'c': [{'x': None}, (True, False)]},
        'literal': {'k': [1, -2], 's': {3}, 'b': b'xy', 'e': ()},
        'numbers': [math.inf, -math.inf, 1 + 2j, -1.5 - 0.5j, 16],
        'empty': 'last assignment wins',
    }
    assert math.isnan(parse_text(tmp_path, 'x = nan\n')['x'])
    assert parse_text(tmp_path, '') == {}


@pytest.mark.parametrize('text, line, shown', [
    ('import os\n', 1, 'import os'),
    ("x = 1\ny = open('PWNED', 'w')\n", 2, "open('PWNED', 'w')"),
    ("x = dict(a=1,\n         b=__import__('os').system('id'))\n", 2,
     "__import__('os').system('id')"),
    ('x = dict(a=other)\n', 1, 'other'),
    ('x = os.sep\n', 1, 'os.sep'),
    ("x = 'a' + 'b'\n", 1, "'a' + 'b'"),
    ('x = dict(\n    a=1,\n    b=1 * 2,\n    c=3)\n', 3, "found '1 * 2'"),  # the line of the value
    ("x = [1,\n     -'s']\n", 2, "found \"-'s'\""),
    ('x = 2 ** 100000\n', 1, '2 ** 100000'),
    ("x = f'{1}'\n", 1, "f'{1}'"),
    ('x = [i for i in range(3)]\n', 1, '[i for i in range(3)]'),
    ('x = lambda: 0\n', 1, 'lambda: 0'),
    ('x = dict(**base)\n', 1, 'dict(**base)'),
    ('x = dict([(1, 2)])\n', 1, 'dict([(1, 2)])'),
    ("x = {**base, 'a': 1}\n", 1, "{**base, 'a': 1}"),
    ('x = {[1]: 2}\n', 1, '{[1]: 2}'),
    ('x = -True\n', 1, 'True'),
    ('x = y = 1\n', 1, 'x = y = 1'),
    ('x.attr = 1\n', 1, 'x.attr = 1'),
    ('x += 1\n', 1, 'x += 1'),
    ('def f():\n    pass\n', 1, 'def f():'),
    ('if True:\n    x = 1\n', 1, 'if True:'),
    ('x = (1 +\n', 1, ''),  # not Python at all
])
def test_anything_but_plain_values_is_refused_with_file_and_line(tmp_path, text, line, shown):
    with pytest.raises(SweepReportError) as err:
        parse_text(tmp_path, text)
    message = str(err.value)
    assert message.startswith(f'{tmp_path / "config.py"}:{line}: ')
    assert shown in message and '\n' not in message


@pytest.mark.parametrize('content', [
    b'\xff\xfe binary', b'x = 1\0', b'x = ' + b'[' * 5000 + b']' * 5000,
    b'x = ' + b'-' * 100000 + b'1', b'x = ' + b'1+' * 100000 + b'1'])
def test_a_file_that_is_not_a_config_is_named(tmp_path, content):
    """Not text, a null byte, nested past what Python's parser takes: an error
    naming the file, not a traceback."""
    path = tmp_path / 'config.py'
    path.write_bytes(content)
    with pytest.raises(SweepReportError, match=f'^{re.escape(str(path))}:'):
        parse_dumped_config(path)


def test_mmengine_dumps_read_back_as_what_was_dumped(tmp_path):
    """What Config.dump writes (the demo config, and values it writes in unusual
    ways: non-name keys, sets, tuples of dicts, infinities, complex numbers)
    reads back as the config that was dumped. (mmengine itself cannot read
    back ``inf``, which it writes for float('inf').)"""
    from mmengine.config import Config
    odd = tmp_path / 'odd.py'
    odd.write_text(
        "weird = {'a.b': 1, 2: 'x', 'c': [dict(x=1), dict(y=None)]}\n"
        "t = (dict(a=1), dict(b=True))\nn = dict(s={1, 2}, c=1+2j, b=b'xy', big=float('inf'),"
        " small=-float('inf'), neg=-0.0, one=('a',), e=(), d={})\n"
        "words = 'it\\'s \"quoted\"\\nover two lines'\n")
    # The demo config inherits from mmdet's configs.
    sources = [odd, DEMO_CONFIG]
    for source in sources:
        config = Config.fromfile(str(source))
        dumped = tmp_path / f'dumped_{source.name}'
        config.dump(str(dumped))
        assert parse_dumped_config(dumped) == config.to_dict(), source
    assert 'big=inf' in (tmp_path / 'dumped_odd.py').read_text()  # a bare name


# ------------------------------------------------- a config that runs code

PAYLOADS = [
    "model = dict(bbox_head=dict(loss_cls=dict(type='FocalLoss')))\n"
    "x = __import__('os').system('touch {marker}')\n",
    "import os\nopen('{marker}', 'w').close()\n"
    "model = dict(bbox_head=dict(loss_cls=dict(type='FocalLoss')))\n",
]


@pytest.mark.parametrize('payload', PAYLOADS)
def test_a_config_with_side_effects_is_not_run(tmp_path, monkeypatch, payload):
    marker = tmp_path / 'PWNED'
    text = payload.format(marker=marker)
    # The payload is live: run as Python, it makes the marker.
    probe = tmp_path / 'probe.py'
    probe.write_text(text)
    subprocess.run([sys.executable, str(probe)], check=True, cwd=tmp_path)
    assert marker.exists()
    marker.unlink()

    monkeypatch.chdir(tmp_path)
    run = work_dir(tmp_path, 'run', text)
    config = run / '20260101_120000' / 'vis_data' / 'config.py'
    line = 2 if 'system' in payload else 1
    with pytest.raises(SweepReportError, match=f'^{re.escape(str(config))}:{line}: '):
        build_report([str(run)])
    assert not marker.exists()
    # The same from the command line: exit status 2, one line naming the file.
    cli = subprocess.run([sys.executable, str(TOOL), str(run)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 2 and not cli.stdout
    assert cli.stderr.splitlines()[-1].startswith(f'sweep_report.py: error: {config}:{line}: ')
    assert not marker.exists()


def test_a_run_that_cannot_be_read_is_one_line(tmp_path):
    """A dumped config or a work dir the report cannot read (here: a folder where
    the config belongs, a work dir it may not list) is named, exit status 2."""
    run = work_dir(tmp_path, 'run', '')
    (run / '20260101_120000' / 'vis_data' / 'config.py').unlink()
    (run / 'run.py').mkdir()
    cli = subprocess.run([sys.executable, str(TOOL), str(run)], capture_output=True, text=True)
    assert cli.returncode == 2 and 'Traceback' not in cli.stderr
    assert cli.stderr.splitlines()[-1] == (
        f'sweep_report.py: error: {run / "run.py"}: cannot read it: Is a directory')
    with pytest.raises(SweepReportError, match=f'^{re.escape(str(run))}: cannot list it: '):
        _newest_first(_Unlistable(run))


class _Unlistable(type(Path())):  # PosixPath: Path itself cannot be subclassed before 3.12
    """A folder whose listing fails as one without read permission does (tests run as root)."""

    def iterdir(self):
        raise PermissionError(13, 'Permission denied', str(self))


def test_a_work_dir_level_config_is_not_run_either(tmp_path):
    """Without a ``<timestamp>/vis_data/config.py`` the newest ``*.py`` in the
    work dir is read: the same rules."""
    marker = tmp_path / 'PWNED'
    run = work_dir(tmp_path, 'run', '')
    (run / '20260101_120000' / 'vis_data' / 'config.py').unlink()
    (run / 'run.py').write_text(f"import os\nos.system('touch {marker}')\n")
    with pytest.raises(SweepReportError, match='run.py:1: '):
        load_run(str(run))
    assert not marker.exists()


# ------------------------------------------------------------- loss types

def test_unset_loss_arguments_get_the_loss_classes_defaults(tmp_path):
    """A config that leaves epsilon (or alpha_weighted_poly) unset trains with the
    class's default; the report shows the same value."""
    from mmdet_polyloss.losses import Poly1CrossEntropyLoss, Poly1FocalLoss
    focal = load_run(str(work_dir(
        tmp_path, 'focal', "model = dict(bbox_head=dict(loss_cls=dict(type='Poly1FocalLoss')))\n")))
    built = Poly1FocalLoss()
    assert (focal.epsilon, focal.alpha_weighted) == (built.epsilon, built.alpha_weighted_poly)
    ce = load_run(str(work_dir(
        tmp_path, 'ce', 'model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict('
        "type='Poly1CrossEntropyLoss'))))\n")))
    assert (ce.epsilon, ce.alpha_weighted) == (Poly1CrossEntropyLoss().epsilon, None)
    assert ce.loss_label == f'poly-1 CE eps={Poly1CrossEntropyLoss().epsilon:+g}'


def test_the_loss_list_is_the_registered_classes(tmp_path):
    """Read from the classes: each name is what mmdet's registry builds."""
    from mmdet.registry import MODELS

    import mmdet_polyloss.losses as losses
    assert sorted(poly_losses()) == sorted(losses.__all__)
    for name in poly_losses():
        assert MODELS.get(name) is getattr(losses, name)
    kinds = {name: (loss.is_poly1, loss.is_poly_n, loss.is_focal)
             for name, loss in poly_losses().items()}
    assert kinds == {'Poly1FocalLoss': (True, False, True),
                     'PolyNFocalLoss': (False, True, True),
                     'Poly1CrossEntropyLoss': (True, False, False)}


@pytest.mark.parametrize('config, message', [
    ("model = 'RetinaNet'\n", "the dumped config sets model to 'RetinaNet', where a dict belongs"),
    ('model = dict(roi_head=[1])\n',
     'the dumped config sets roi_head to [1], where a dict belongs'),
    ("model = dict(bbox_head=dict(loss_cls=dict(type='FocalLoss')))\nrandomness = 3\n",
     'the dumped config sets randomness to 3, where a dict belongs'),
    ("model = dict(bbox_head=dict(loss_cls=dict(type='FocalLoss')))\ntrain_cfg = [8]\n",
     'the dumped config sets train_cfg to [8], where a dict belongs'),
    ("model = dict(bbox_head=dict(loss_cls=dict(type=['FocalLoss'])))\n",
     "the dumped config's loss_cls type is ['FocalLoss'], where a loss name belongs"),
    ('model = dict(bbox_head=dict(loss_cls=dict(type=dict(a=1))))\n',
     "the dumped config's loss_cls type is {'a': 1}, where a loss name belongs"),
])
def test_a_dumped_config_of_the_wrong_shape_is_one_line(tmp_path, config, message):
    """Sections that are not dicts, or a loss type that is not a name: the run's
    work dir and what is wrong, not a traceback from inside the reader."""
    work = work_dir(tmp_path, 'run', config)
    with pytest.raises(SweepReportError) as error:
        load_run(str(work))
    assert str(error.value) == f'{work}: {message}'
