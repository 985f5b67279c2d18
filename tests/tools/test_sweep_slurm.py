"""tools/sweep.py --launcher slurm on a real single-node Slurm cluster (the
``slurm_cluster`` fixture, tests/slurm_cluster.py): the demo sweep (focal and
Poly-1 at epsilon -1, CPU-only runs) as one job array, with a requeue and a time
limit in the middle of training, the report job, and reruns."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from slurm_cluster import wait_until

from tools.lib.sweep import slurm_queue

from train_helpers import FAST, ROOT, load_tool, make_workspace, run_in_process

SCRIPT = ROOT / 'tools' / 'sweep.py'
POLY = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'
FOCAL = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
NAMES = ('retinanet_tiny_fpn_focal_shapes', 'retinanet_tiny_fpn_poly1-eps-1_shapes')
EPOCHS = 10
SIGNAL_SECONDS = 60
#: Seconds each training iteration is held back, so that a run outlasts the signals the
#: test sends it however fast the machine trains (8 iterations an epoch).
PACE_SECONDS = 1.0
PACE_HOOK = '''"""Hold each training iteration back by ``seconds`` (the Slurm test's pace)."""
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PaceHook(Hook):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        time.sleep(self.seconds)
'''


def paced_configs(workspace: Path) -> List[Path]:
    """The demo's focal and Poly-1 configs (same file names, so the same run names),
    each with the pace hook, imported from the workspace (put on PYTHONPATH)."""
    (workspace / 'pace_hook.py').write_text(PACE_HOOK)
    (workspace / 'paced').mkdir()
    paced = []
    for config in (FOCAL, POLY):
        path = workspace / 'paced' / config.name
        path.write_text(f"_base_ = '{config}'\n"
                        "custom_imports = dict(imports=['mmdet_polyloss', 'pace_hook'], "
                        "allow_failed_imports=False)\n"
                        f"custom_hooks = [dict(type='PaceHook', seconds={PACE_SECONDS})]\n")
        paced.append(path)
    return paced


def sweep(args: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def epoch_of(work_dir: Path) -> int:
    """The epoch of the checkpoint the run's last_checkpoint names (0: none yet)."""
    try:
        name = Path((work_dir / 'last_checkpoint').read_text().strip()).name
    except OSError:
        return 0
    match = re.fullmatch(r'epoch_(\d+)\.pth', name)
    return int(match.group(1)) if match else 0


def elapsed_seconds(cluster, job: str) -> Optional[int]:
    """How long the job has run (squeue's %M: [D-]H:M:S or M:S)."""
    text = cluster.command('squeue', '-h', '-j', job, '-o', '%M').stdout.strip()
    if not text or text == 'INVALID':
        return None
    seconds = 0
    for part in text.split('-')[-1].split(':'):
        seconds = seconds * 60 + int(part)
    return seconds


@pytest.mark.slow
def test_the_demo_sweep_survives_a_requeue_and_a_time_limit_on_a_real_cluster(
        slurm_cluster, tmp_path):
    """Both runs run at once on the two cores. The focal run is requeued with
    ``scontrol requeue`` once it has a checkpoint; the Poly-1 run's time limit is
    cut short once it has one (``scontrol update TimeLimit``, so that the USR1
    ``--signal-seconds`` before it, which Slurm sends up to 30 s early, lands in
    the middle of training): it stops, requeues itself and resumes. Both finish
    from their checkpoints (mmengine's "resumed epoch"), the report job writes both
    rows, and a rerun submits nothing. A hook holds each iteration back
    (``PACE_SECONDS``), so the runs outlast the signals on a machine of any speed."""
    cluster = slurm_cluster
    workspace = make_workspace(tmp_path, num_train=32, num_val=8)
    focal_config, poly_config = paced_configs(workspace)
    env = dict(cluster.env, PYTHONPATH=str(workspace))
    options = [o for o in FAST if not o.startswith(('randomness.seed=', 'train_cfg.'))]
    options += [f'train_cfg.max_epochs={EPOCHS}', 'train_cfg.val_interval=100']
    args = [str(poly_config), '--baseline', str(focal_config), '--epsilons', '-1',
            '--work-dir-root',
            'sweep', '--launcher', 'slurm', '--partition', cluster.partition, '--gpus', '0',
            '--time', '15', '--signal-seconds', str(SIGNAL_SECONDS),
            '--cfg-options', *options]
    root = workspace / 'sweep'
    focal, poly = (root / name for name in NAMES)
    timings: Dict[str, float] = {}
    start = time.monotonic()

    first = sweep(args, workspace, env)
    assert 'submitted 2 runs as job array' in first.stdout, first.stdout
    assert f'squeue --name {first.stdout.split("job name ")[1].split(")")[0]}' in first.stdout
    jobs = dict(re.findall(r'^  (\S+) +job (\d+_\d+) log ', first.stdout, re.MULTILINE))
    assert sorted(jobs) == sorted(NAMES), first.stdout
    job_name = first.stdout.split('job name ')[1].split(')')[0]

    def both_running():
        queue = slurm_queue.read_queue(job_name, env=cluster.env)
        return queue if all(queue.get(n) and queue[n].state == 'RUNNING' for n in NAMES) \
            else None
    wait_until(both_running, 60, 'both runs running at once', interval=1.0)
    timings['both running'] = time.monotonic() - start
    # Run again while they run: each run's state, nothing submitted.
    again = sweep(args, workspace, env)
    assert 'submitted' not in again.stdout.replace('not submitted', '')
    for name in NAMES:
        assert re.search(rf'{re.escape(name)} +running +job {jobs[name]} ', again.stdout), \
            again.stdout

    # Cut the Poly-1 run's limit short once it has a checkpoint (the earliest point
    # at which a stop can be resumed: the most training left for USR1 to land in);
    # requeue the focal run once it has two.
    wait_until(lambda: epoch_of(poly) >= 1, 240, 'a checkpoint of the Poly-1 run',
               interval=1.0)
    timings['Poly-1 at epoch 1'] = time.monotonic() - start
    used = elapsed_seconds(cluster, jobs[NAMES[1]])
    assert used is not None
    limit = used + SIGNAL_SECONDS + 10  # USR1 due in 10 s
    cluster.command('scontrol', 'update', f'JobId={jobs[NAMES[1]]}',
                    f'TimeLimit={limit // 60}:{limit % 60:02d}')
    poly_log = root / 'slurm' / 'logs' / f'{job_name}-{jobs[NAMES[1]]}.out'
    wait_until(lambda: epoch_of(focal) >= 2, 240, 'two checkpoints of the focal run',
               interval=1.0)
    cluster.command('scontrol', 'requeue', jobs[NAMES[0]])
    timings['focal requeued at epoch 2'] = time.monotonic() - start
    wait_until(lambda: 'requeued; it resumes' in poly_log.read_text(), 120,
               'the Poly-1 run to requeue itself near its time limit', interval=1.0)
    timings['time-limit requeue'] = time.monotonic() - start
    cluster.command('scontrol', 'update', f'JobId={jobs[NAMES[1]]}', 'TimeLimit=15')

    report = root / 'sweep.md'
    wait_until(report.is_file, 600, 'the report job to write sweep.md', interval=3)
    timings['report written'] = time.monotonic() - start
    table = report.read_text()
    assert f'| {NAMES[0]} (baseline) | focal |' in table and f'| {NAMES[1]} |' in table
    assert 'Not in the tables' not in table and (root / 'sweep.png').stat().st_size > 10_000

    logs = {name: (root / 'slurm' / 'logs' / f'{job_name}-{job}.out').read_text()
            for name, job in jobs.items()}
    assert 'TERM (requeue, pre-emption or cancel)' in logs[NAMES[0]]
    assert 'USR1: the time limit is near' in logs[NAMES[1]]
    for name in NAMES:
        log, work_dir = logs[name], root / name
        assert 'attempt 2 ' in log, (name, log[-3000:])
        resumed = [int(e) for e in re.findall(r'resumed epoch: (\d+)', log)]
        assert resumed and resumed[0] >= 1, (name, resumed)  # from its checkpoint
        assert epoch_of(work_dir) == EPOCHS
        assert json.loads((work_dir / '.sweep-run.json').read_text())['state'] == 'tested'
        assert re.search(rf'Epoch\(train\) +\[{EPOCHS}\]\[8/8\]', log), (name, log[-2000:])
    # The runs' first attempts overlapped (two CPUs, one each).
    starts = [re.search(r'\[slurm_run.sh (\d+):(\d+):(\d+)\] .* attempt 1 ', logs[n])
              for n in NAMES]
    seconds = [int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) for m in starts]
    assert abs(seconds[0] - seconds[1]) < 30

    # A finished sweep, run again: every run done, nothing submitted, the report again.
    run_files = sorted((root / 'slurm').glob('*.json'))
    done = sweep(args, workspace, env)
    assert 'every run is done; nothing submitted' in done.stdout, done.stdout
    for name in NAMES:
        assert re.search(rf'{re.escape(name)} +done ', done.stdout), done.stdout
    assert sorted((root / 'slurm').glob('*.json')) == run_files
    timings['total'] = time.monotonic() - start
    print('timings (s):', {k: round(v, 1) for k, v in timings.items()})


def standin_slurm(tmp_path: Path) -> Dict[str, str]:
    """An environment whose sbatch records its arguments and answers job ids
    (41, then 42), or refuses the partition while ``tmp_path/refuse`` exists; whose
    squeue shows an empty queue; whose scontrol and scancel record their arguments
    in ``tmp_path/commands.log``."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'sbatch').write_text(
        f'#!/bin/sh\nif [ -e {tmp_path}/refuse ]; then\n'
        '  echo "sbatch: error: invalid partition specified: nope" >&2; exit 1\nfi\n'
        f'echo "$@" >> {tmp_path}/sbatch.log\n'
        f'echo $(( 41 + $(wc -l < {tmp_path}/sbatch.log) - 1 ))\n')
    (bin_dir / 'squeue').write_text('#!/bin/sh\nexit 0\n')
    for tool in ('scontrol', 'scancel'):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/commands.log\n')
    for tool in ('sbatch', 'squeue', 'scontrol', 'scancel'):
        (bin_dir / tool).chmod(0o755)
    return dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')


def test_force_clears_a_finished_run_only_once_sbatch_has_accepted_it(tmp_path, monkeypatch):
    """sbatch refuses the partition: nothing queued, the finished run's files all kept.
    Accepted: the array is submitted held, the run's folder cleared, then released."""
    monkeypatch.setenv('PATH', standin_slurm(tmp_path)['PATH'])
    monkeypatch.chdir(make_workspace(tmp_path, num_train=2, num_val=1))  # the data is checked
    work_dir = tmp_path / 'sweep' / NAMES[1]
    work_dir.mkdir(parents=True)
    files = {'.sweep-run.json': '{"key": "k", "state": "tested"}', 'epoch_1.pth': 'PK',
             'last_checkpoint': str(work_dir / 'epoch_1.pth'), 'result.json': '{}'}
    for name, text in files.items():
        (work_dir / name).write_text(text)
    args = [str(POLY), '--epsilons', '-1', '--work-dir-root', str(tmp_path / 'sweep'),
            '--launcher', 'slurm', '--partition', 'nope', '--gpus', '0', '--force']
    (tmp_path / 'refuse').touch()
    refused = run_in_process(load_tool('sweep').main, args, 'sweep.py')
    assert refused.returncode == 2
    assert refused.stderr == ('sweep.py: error: submitting 1 runs: sbatch failed: sbatch: error: '
                              'invalid partition specified: nope\n')
    assert {p.name: p.read_text() for p in work_dir.iterdir() if p.name in files} == files
    (tmp_path / 'refuse').unlink()
    accepted = run_in_process(load_tool('sweep').main, args, 'sweep.py')
    assert accepted.returncode == 0, accepted.stderr
    array = (tmp_path / 'sbatch.log').read_text().splitlines()[0]
    assert ' --hold ' in array
    assert (tmp_path / 'commands.log').read_text() == 'scontrol release 41\n'
    assert sorted(p.name for p in work_dir.iterdir()) == ['.slurm-run.lock']


def test_missing_data_is_refused_before_a_finished_run_is_cleared(tmp_path, monkeypatch):
    """--force with the dataset gone: one line naming the file, the finished run kept (it
    was cleared first, then every training failed). Not checked for Slurm, whose nodes may
    hold data the submitting host does not."""
    monkeypatch.setenv('PATH', standin_slurm(tmp_path)['PATH'])
    monkeypatch.chdir(tmp_path)  # no data/polyloss_shapes here
    work_dir = tmp_path / 'sweep' / NAMES[1]
    work_dir.mkdir(parents=True)
    (work_dir / '.sweep-run.json').write_text('{"key": "k", "state": "tested"}')
    args = [str(POLY), '--epsilons', '-1', '--work-dir-root', str(tmp_path / 'sweep'),
            '--force', '--launcher']
    for launcher in (['none'], ['pytorch', '--gpus', '2']):  # (Slurm's nodes: not checked)
        refused = run_in_process(load_tool('sweep').main, [*args, *launcher], 'sweep.py')
        assert refused.returncode == 2
        assert refused.stderr == (
            "sweep.py: error: train_dataloader.dataset.ann_file: no such file: "
            "'data/polyloss_shapes/annotations/instances_train.json' (relative paths are from "
            f"{str(tmp_path)!r}); python tools/make_demo_data.py makes it\n")
        assert sorted(p.name for p in work_dir.iterdir()) == ['.sweep-run.json']


@pytest.mark.parametrize('wait', [False, True])
def test_submission_without_a_cluster_array_then_report_job(tmp_path, wait):
    """What reaches sbatch: one array of both runs, then the report job after it
    (afterany); --wait makes the report's sbatch wait, without it the command says
    how to follow the jobs."""
    env = standin_slurm(tmp_path)
    args = [str(POLY), '--baseline', str(FOCAL), '--epsilons', '-1', '--work-dir-root',
            str(tmp_path / 'sweep'), '--launcher', 'slurm', '--partition', 'p', '--gpus', '0',
            '--time', '1:00:00'] + (['--wait'] if wait else [])
    result = sweep(args, tmp_path, env)
    array, report = (tmp_path / 'sbatch.log').read_text().splitlines()
    assert array.startswith('--parsable --array=0-1 --job-name=sweep-sweep-')
    assert '--ntasks=1 --cpus-per-task=1' in array and '--time=1:00:00' in array
    assert report.startswith('--parsable --wait ' if wait else '--parsable --job-name=')
    assert '--dependency=afterany:41 --partition=p' in report
    assert f'tools/sweep_report.py {tmp_path}/sweep/{NAMES[0]} {tmp_path}/sweep/{NAMES[1]}' \
        in report and f'--baseline {tmp_path}/sweep/{NAMES[0]}' in report
    assert re.search(rf'{NAMES[0]} +job 41_0 log {tmp_path}/sweep/slurm/logs/sweep-sweep-'
                     r'\w+-41_0.out', result.stdout), result.stdout
    assert ('Follow: squeue --name' in result.stdout) is not wait
    assert 'report job 42 (after 41;' in result.stdout


@pytest.mark.slow
def test_a_failed_run_shows_its_cause_and_waits_for_retry_failed_on_a_real_cluster(
        slurm_cluster, tmp_path):
    """A training that exits with an error (a schedule train.py refuses): --wait reports
    the report job's own error; a rerun quotes the run's error and submits nothing;
    --retry-failed submits it held, clears its folder, releases it; a rerun adopts it
    and replaces the pending report job (one at a time); a rerun with other settings
    names the queued task and submits nothing. ``--begin`` keeps the resubmitted task
    pending: nothing trains after the first failure."""
    cluster = slurm_cluster
    make_workspace(tmp_path, num_train=2, num_val=1)  # the data train.py and the sweep check
    root = tmp_path / 'sweep'
    work_dir = root / NAMES[1]
    base = [str(POLY), '--epsilons', '-1', '--work-dir-root', str(root), '--launcher', 'slurm',
            '--partition', cluster.partition, '--gpus', '0']
    bad = [*base, '--cfg-options', 'train_cfg.max_epochs=0']  # train.py, not the sweep, refuses
    later = '--sbatch-args=--begin=now+1hour'

    def call(args: List[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path,
                              env=cluster.env, capture_output=True, text=True, timeout=300)

    def pending(name: str) -> List[str]:
        return cluster.command('squeue', '-h', '-r', '-t', 'PENDING', f'--name={name}', '-o',
                               '%i %R').stdout.splitlines()
    waited = call([*bad, '--wait'])
    assert waited.returncode == 2, waited.stdout + waited.stderr
    assert re.fullmatch(r'sweep.py: error: the report job \d+ failed \(exit status \d+\): '
                        r'sweep_report.py: error: no run has a test of the checkpoint its '
                        r'training ended with yet: .*\(its log: \S+/report.out\)\n',
                        waited.stderr), waited.stderr
    job = re.search(r'job (\d+_0) log', waited.stdout).group(1)
    job_name = waited.stdout.split('job name ')[1].split(')')[0]

    again = call(bad)
    assert again.returncode == 0, again.stderr
    assert re.search(rf'{re.escape(NAMES[1])} +failed +job {job} \(FAILED \(NonZeroExitCode\)\) '
                     r'log \S+: train.py: error: train_cfg.max_epochs=0 leaves nothing to '
                     r'train \(0 iterations\): it must be >= 1', again.stdout), again.stdout
    assert ('not resubmitted: it would fail the same way; fix the cause, then rerun with '
            '--retry-failed') in again.stdout
    assert '[sweep] submitted' not in again.stdout and 'nothing queued or running' in again.stdout

    retried = call([*bad, '--retry-failed', later])
    assert retried.returncode == 0, retried.stderr
    array = re.search(r'submitted 1 runs as job array (\d+)', retried.stdout).group(1)
    assert pending(job_name) == [f'{array}_0 (BeginTime)']  # released: no longer held
    assert sorted(p.name for p in work_dir.iterdir()) == ['.slurm-run.lock']
    (first_report,) = pending(f'{job_name}-report')

    adopted = call([*bad, later])
    assert adopted.returncode == 0, adopted.stderr
    assert re.search(rf'{re.escape(NAMES[1])} +queued +job {array}_0 ', adopted.stdout)
    assert f'cancelled the pending report job {first_report.split()[0]}' in adopted.stdout
    assert len(pending(f'{job_name}-report')) == 1 and '[sweep] submitted' not in adopted.stdout

    changed = call([*base, '--retrain-changed', later])
    assert changed.returncode == 2
    assert f'queued with other settings; scancel {array}_0 first' in changed.stdout
    assert changed.stderr == (
        'sweep.py: error: 1 runs are queued or running with other settings than this '
        "command's (its config, --cfg-options, --key-files or --gpus differ): scancel "
        f'{array}_0 first, then run it again\n')
    assert pending(job_name) == [f'{array}_0 (BeginTime)']
    cluster.command('scancel', f'--name={job_name}')
    cluster.command('scancel', f'--name={job_name}-report')
