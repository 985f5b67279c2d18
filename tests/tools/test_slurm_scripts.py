"""tools/slurm_train.sh and slurm_test.sh: the srun command they build (a stand-in
srun on PATH prints it), and their usage error."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, args, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    fake = tmp_path / 'srun'
    fake.write_text('#!/bin/sh\necho "srun $*"\n')
    fake.chmod(0o755)
    return subprocess.run(['bash', str(ROOT / 'tools' / script), *args], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', **env))


def test_train_and_test_run_their_tool_under_srun(tmp_path):
    train = _run('slurm_train.sh', ['gpu', 'job', 'cfg.py', 'wd', '--amp'], tmp_path,
                 GPUS='16', PYTHON='py')
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip() == (
        'srun -p gpu --job-name=job --gres=gpu:8 --ntasks=16 --ntasks-per-node=8 '
        f'--cpus-per-task=5 --kill-on-bad-exit=1 py -u {ROOT}/tools/train.py '
        '--launcher=slurm cfg.py --work-dir=wd --amp')
    test = _run('slurm_test.sh', ['gpu', 'job', 'cfg.py', 'ck.pth', '--out', 'x.pkl'], tmp_path,
                GPUS='2', SRUN_ARGS='--qos=low', PYTHON='py')
    assert test.returncode == 0, test.stderr
    assert test.stdout.strip() == (
        'srun -p gpu --job-name=job --gres=gpu:2 --ntasks=2 --ntasks-per-node=2 '
        f'--cpus-per-task=5 --kill-on-bad-exit=1 --qos=low py -u {ROOT}/tools/test.py '
        '--launcher=slurm cfg.py ck.pth --out x.pkl')


def test_missing_arguments_print_the_usage_and_exit_2(tmp_path):
    result = _run('slurm_test.sh', ['gpu', 'job', 'cfg.py'], tmp_path)
    assert result.returncode == 2
    assert 'usage:' in result.stderr and 'CHECKPOINT' in result.stderr


def test_a_gpus_that_is_no_count_is_named(tmp_path):
    """GPUS=abc was 'abc: unbound variable' from bash arithmetic, never naming GPUS."""
    for gpus in ('abc', '0', '-2'):
        result = _run('slurm_train.sh', ['gpu', 'job', 'cfg.py', 'wd'], tmp_path, GPUS=gpus)
        assert (result.returncode, result.stdout) == (2, '')
        assert result.stderr == f"slurm_train.sh: GPUS must be a positive integer, got '{gpus}'\n"
