"""tools/run_demo.sh: DATASET, SEEDS and EPSILONS checked before any work (in Python:
tools/lib/sweep/settings.py) and the sweep they make (DRY_RUN=1); the sweep itself
(skips, resumes, damaged runs, a tiny run end to end) is tests/tools/test_sweep.py."""
import os
import subprocess
from pathlib import Path

import pytest

from tools.lib.errors import UserError
from tools.lib.sweep.settings import parse_epsilons, parse_seeds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('variable,value,message', [
    ('DATASET', 'coco', "DATASET must be trees or shapes, got DATASET='coco'"),
    ('MODEL', 'resnet50', "MODEL must be tiny or mobilenetv2, got MODEL='resnet50'"),
    ('MODEL', 'mobilenetv2 DATASET=shapes', "MODEL=mobilenetv2 needs DATASET=trees, got "
     "DATASET='shapes'"),
    ('SEEDS', '0 x1', "SEEDS must hold non-negative integers, got 'x1' in SEEDS='0 x1'"),
    ('SEEDS', '-1', "got '-1' in SEEDS='-1'"),
    ('SEEDS', '1.5', "got '1.5' in SEEDS='1.5'"),
    ('SEEDS', '0 1 01', "SEEDS lists seed 1 twice: SEEDS='0 1 01'"),
    # bash arithmetic made these 1 and a negative seed; a seed is below 2^32.
    ('SEEDS', '18446744073709551617', "SEEDS must hold seeds below 2^32 = 4294967296, got "
     "'18446744073709551617' in SEEDS='18446744073709551617'"),
    ('SEEDS', '9223372036854775808', "got '9223372036854775808'"),
    ('SEEDS', '0 4294967296', "SEEDS must hold seeds below 2^32 = 4294967296, got '4294967296'"),
    ('SEEDS', '9' * 5000, 'SEEDS must hold seeds below 2^32'),  # no int() of 5000 digits
    ('SEEDS', '\u0661', "SEEDS must hold non-negative integers, got '\u0661'"),  # not ASCII
    ('SEEDS', '*', "got '*' in SEEDS='*'"),  # no file names from a glob
    ('SEEDS', ' ', "SEEDS lists no seed: SEEDS=' '"),
    ('EPSILONS', '-1 x', "EPSILONS must hold decimal numbers >= -1, got 'x' in EPSILONS='-1 x'"),
    ('EPSILONS', '-1.5', "got '-1.5' in EPSILONS='-1.5'"),  # negative loss: refused
    ('EPSILONS', '1e-3', "got '1e-3' in EPSILONS='1e-3'"),
    ('EPSILONS', '--1', "got '--1' in EPSILONS='--1'"),
    ('EPSILONS', '-0.5 -1 -.5', "EPSILONS lists epsilon -0.5 twice: EPSILONS='-0.5 -1 -.5'"),
    ('EPSILONS', '0 -0', "EPSILONS lists epsilon 0 twice"),
    ('EPSILONS', '9' * 400, 'is too large for the loss, which computes in float32'),
])
def test_bad_settings_stop_before_any_work(variable, value, message, tmp_path):
    env = dict(os.environ, WORK_DIR=str(tmp_path / 'demo'))
    env[variable] = value
    if ' DATASET=' in value:  # MODEL with a DATASET it does not fit
        env[variable], env['DATASET'] = value.split(' DATASET=')
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith('run_demo: error: ') and result.stderr.count('\n') == 1
    assert '[run_demo]' not in result.stdout  # no set-up, data or training started
    assert not (tmp_path / 'demo').exists()


def test_settings_as_the_shell_loop_normalised_them():
    assert parse_seeds('00 7 4294967295') == [0, 7, 4294967295]
    assert parse_seeds('1\t2\n3') == [1, 2, 3]
    assert parse_epsilons('-1 -.5 0.50 1. 0.1234567890123456789 -0') == [
        '-1', '-0.5', '+0.5', '+1', '+0.123456789012346', '0']
    assert parse_epsilons('') == []  # focal loss only
    with pytest.raises(UserError, match="^MY_SEEDS must hold non-negative integers, got 'a'"):
        parse_seeds('a', 'MY_SEEDS')  # for other launchers (the sweep)


@pytest.mark.parametrize('dataset,model,configs', [(None, None, 'trees'),
                                                   ('shapes', None, 'demo'),
                                                   (None, 'tiny', 'trees')])
def test_dry_run_shows_each_seed_and_epsilon_reaching_train_and_test(dataset, model, configs,
                                                                      tmp_path):
    """run_demo.sh is the sweep over one dataset's configs (the tree crowns with the
    pretrained model unless DATASET=shapes or MODEL=tiny): each (seed, epsilon) gets
    its own work dir, and its seed and epsilon reach tools/train.py and tools/test.py
    (the report reads them from the config test.py dumps)."""
    work = tmp_path / 'demo'
    env = dict(os.environ, WORK_DIR=str(work), SEEDS='0 1', EPSILONS='-1 -.5 0.25',
               DRY_RUN='1')
    env.pop('DATASET', None)
    env.pop('MODEL', None)
    if dataset:
        env['DATASET'] = dataset
    if model:
        env['MODEL'] = model
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [line.split('$ ', 1)[1] for line in result.stdout.splitlines()
                if line.startswith('  $ ')]
    suffix = dataset or 'trees'
    # The trees' default model is the pretrained one; the shapes have only the tiny one.
    prefix = f'retinanet_{model or ("tiny" if dataset else "mobilenetv2")}_fpn'
    focal = f'configs/{configs}/{prefix}_focal_{suffix}.py'
    poly = f'configs/{configs}/{prefix}_poly1-eps-1_{suffix}.py'
    eps = 'model.bbox_head.loss_cls.epsilon='
    runs = [(focal, f'{prefix}_focal_{suffix}', ''),
            (poly, f'{prefix}_poly1-eps-1_{suffix}', f' {eps}-1.0'),
            (poly, f'{prefix}_poly1-eps-0.5_{suffix}', f' {eps}-0.5'),
            (poly, f'{prefix}_poly1-eps+0.25_{suffix}', f' {eps}0.25')]
    expected = []
    for seed in (0, 1):
        for config, name, loss in runs:
            run = work / (name + ('' if seed == 0 else f'_seed{seed}'))
            options = f'--cfg-options randomness.seed={seed}{loss}'
            expected.append(f'tools/train.py {config} --work-dir {run} {options}')
            expected.append(f'tools/test.py {config} <last checkpoint> --work-dir {run} '
                            f'{options}')
    assert [c.split(' ', 1)[1].replace(str(ROOT) + '/', '') for c in commands] == expected
    assert not work.exists()  # nothing was run
