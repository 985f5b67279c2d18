"""tools/lib/sweep/slurm_jobs.py, slurm_queue.py and tools/slurm_run.sh: a sweep's runs as
one Slurm job array.

Without a cluster: the sbatch commands, the run file, the queue parser, the
rendezvous port, and the job script's steps and signals with a stand-in
``scontrol``. On a real single-node cluster (the ``slurm_cluster`` fixture,
tests/slurm_cluster.py): two runs at once on the two cores, one requeued with
``scontrol requeue`` and one by its time limit, both resuming their count and
finishing; the queue reader; a second submission that submits nothing; a
report job after the array. The stand-in train and test commands are
tests/slurm_standin.py.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import slurm_cluster as slurm_cluster_module
from slurm_cluster import wait_until

from tools.lib.errors import UserError
from tools.lib.sweep import slurm_jobs, slurm_queue, task
from tools.lib.sweep.run import MARKER
from tools.lib.sweep.slurm_jobs import LAST_CHECKPOINT, ArrayOptions, SlurmRun
from tools.lib.sweep.slurm_queue import QueuedTask

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'slurm_run.sh'
STANDIN = ROOT / 'tests' / 'slurm_standin.py'


def standin_run(root: Path, name: str, iterations: int, *flags: str,
                key: str = 'k1') -> SlurmRun:
    """A run whose train command is the stand-in, counting ``iterations`` seconds."""
    work_dir = root / name
    return SlurmRun(name, work_dir,
                    [sys.executable, str(STANDIN), 'train', str(work_dir), str(iterations),
                     *flags],
                    [sys.executable, str(STANDIN), 'test', str(work_dir), LAST_CHECKPOINT],
                    key)


def events(work_dir: Path, kind: Optional[str] = None) -> List[Dict]:
    """The stand-in's events in ``work_dir`` (of one ``kind``)."""
    path = work_dir / 'events.jsonl'
    lines = path.read_text().splitlines() if path.is_file() else []
    found = [json.loads(line) for line in lines]
    return [e for e in found if kind is None or e['event'] == kind]


def marker(work_dir: Path) -> Dict:
    return json.loads((work_dir / MARKER).read_text())


# --- sbatch commands, options, times -------------------------------------------------

def test_array_command_has_every_option(tmp_path):
    options = ArrayOptions(job_name='sweep_retina', log_dir=tmp_path / 'logs', partition='gpu',
                           time='8:00:00', gpus=8, cpus_per_task=5, max_parallel=4,
                           signal_seconds=600, extra=('--account=det', '--qos=low'))
    argv = slurm_jobs.sbatch_array_argv(15, options, tmp_path / 'runs.json')
    assert argv == [
        'sbatch', '--parsable', '--array=0-14%4', '--job-name=sweep_retina',
        f'--output={tmp_path}/logs/sweep_retina-%A_%a.out', '--open-mode=append', '--requeue',
        '--signal=B:USR1@600', '--partition=gpu', '--time=8:00:00', '--ntasks=8',
        '--gpus-per-task=1', '--cpus-per-task=5', '--account=det', '--qos=low',
        str(SCRIPT), f'{tmp_path}/runs.json']


def test_a_cpu_only_array_has_one_task_per_run_and_no_limits_it_was_not_given(tmp_path):
    options = ArrayOptions(job_name='s', log_dir=tmp_path)
    argv = slurm_jobs.sbatch_array_argv(1, options, tmp_path / 'r.json')
    assert argv[:8] == ['sbatch', '--parsable', '--array=0-0', '--job-name=s',
                        f'--output={tmp_path}/s-%A_%a.out', '--open-mode=append', '--requeue',
                        '--signal=B:USR1@300']
    assert argv[8:] == ['--ntasks=1', '--cpus-per-task=1', str(SCRIPT), f'{tmp_path}/r.json']


@pytest.mark.parametrize('change, message', [
    (dict(job_name='two words'), "--job-name must be 1 to 200 letters, digits or ._+=-, got "
                                 "'two words'"),
    (dict(job_name='a/b'), "got 'a/b'"),
    (dict(partition=' '), "--partition must name a partition, got ' '"),
    (dict(time='2h'), "--time takes a Slurm time limit (MINUTES, H:MM:SS, D-HH, D-HH:MM:SS), "
                      "got '2h'"),
    (dict(time='0'), "--time must be a positive time limit, got '0'"),
    (dict(time='5'), "--time '5' (300 s) must be longer than the 300 s before it at which a "
                     "run stops to be requeued"),
])
def test_bad_options_are_user_errors_naming_the_argument(tmp_path, change, message):
    options = ArrayOptions(**{'job_name': 'sweep', 'log_dir': tmp_path, **change})
    with pytest.raises(UserError) as error:
        slurm_jobs.sbatch_array_argv(2, options, tmp_path / 'r.json')
    assert message in str(error.value)


def test_an_array_needs_a_run(tmp_path):
    with pytest.raises(UserError, match='at least one run, got count=0'):
        slurm_jobs.sbatch_array_argv(0, ArrayOptions('s', tmp_path), tmp_path / 'r.json')


@pytest.mark.parametrize('text, seconds', [
    ('90', 5400), ('1:30', 90), ('2:00:00', 7200), ('1-0', 86400), ('1-2:03', 93780),
    ('1-2:03:04', 93784), ('UNLIMITED', None), ('infinite', None)])
def test_slurm_time_formats(text, seconds):
    assert slurm_jobs.parse_time(text) == seconds


def test_report_job_waits_for_the_arrays_however_they_end(tmp_path):
    argv = slurm_jobs.report_argv(['python', 'tools/sweep_report.py', 'a dir'], ['17', '18_2'],
                                  'sweep-report', tmp_path / 'report.out', partition='cpu',
                                  time_limit='30', extra=['--qos=low'])
    assert argv == ['sbatch', '--parsable', '--job-name=sweep-report',
                    f'--output={tmp_path}/report.out', '--open-mode=append', '--ntasks=1',
                    '--cpus-per-task=1', '--dependency=afterany:17:18_2', '--partition=cpu',
                    '--time=30', '--qos=low', "--wrap=python tools/sweep_report.py 'a dir'"]
    with pytest.raises(UserError, match=r"job ids \(ID or ARRAY_TASK\), got \['x1'\]"):
        slurm_jobs.report_argv(['true'], ['x1'], 'r', tmp_path / 'r.out')
    with pytest.raises(UserError, match='non-empty list of strings, got'):
        slurm_jobs.report_argv([], [], 'r', tmp_path / 'r.out')


# --- the run file, the rendezvous port -------------------------------------------------

def test_run_file_maps_each_index_to_its_run(tmp_path):
    runs = [standin_run(tmp_path, 'a', 3), standin_run(tmp_path, 'b', 3, key='k2')]
    options = ArrayOptions('sweep', tmp_path / 'logs', stop_grace=7)
    path = slurm_jobs.write_run_file(tmp_path / 'runs' / 'r.json', runs, options)
    data = slurm_jobs.read_run_file(path)
    assert data['version'] == 2 and data['job_name'] == 'sweep'
    assert data['log'] == f'{tmp_path}/logs/sweep-%A_%a.out'
    assert data['stop_grace'] == 7
    assert sorted(data['tasks']) == ['0', '1']
    assert data['tasks']['1'] == {
        'name': 'b', 'work_dir': str(tmp_path / 'b'), 'train': list(runs[1].train),
        'test': list(runs[1].test), 'key': 'k2'}


def test_run_file_errors(tmp_path):
    options = ArrayOptions('sweep', tmp_path)
    run = standin_run(tmp_path, 'a', 3)
    with pytest.raises(UserError, match=r"two runs share a name: \['a', 'a'\]"):
        slurm_jobs.run_file_data([run, run], options)
    empty = SlurmRun('e', tmp_path / 'e', [], ['true'])
    with pytest.raises(UserError, match="run 'e': its train command must be a non-empty list"):
        slurm_jobs.run_file_data([empty], options)
    (tmp_path / 'other.json').write_text('{"tasks": {}}')
    with pytest.raises(UserError, match='is not a run file'):
        slurm_jobs.read_run_file(tmp_path / 'other.json')
    (tmp_path / 'bad.json').write_text('{')
    with pytest.raises(UserError, match='cannot read the run file'):
        slurm_jobs.read_run_file(tmp_path / 'bad.json')


def test_a_sweeps_job_name_names_its_root_and_tells_roots_of_one_name_apart(tmp_path):
    one = slurm_jobs.sweep_job_name(tmp_path / 'a' / 'sweep x')
    other = slurm_jobs.sweep_job_name(tmp_path / 'b' / 'sweep x')
    assert one.startswith('sweep-sweep_x-') and len(one) == len('sweep-sweep_x-') + 8
    assert one != other and one == slurm_jobs.sweep_job_name(tmp_path / 'a' / '.' / 'sweep x')
    options = ArrayOptions(slurm_jobs.sweep_job_name(tmp_path / ('é' * 300)), tmp_path)
    slurm_jobs.check_options(options)  # a valid job name, whatever the folder is called


def test_master_port_is_derived_from_the_job_id():
    assert task.master_port(0) == 10000
    assert task.master_port(12345) == 22345
    assert task.master_port(20000) == 10000
    ports = {task.master_port(i) for i in range(1000, 1100)}
    assert len(ports) == 100 and all(10000 <= p < 30000 for p in ports)
    with pytest.raises(ValueError, match='job_id must be >= 0, got -1'):
        task.master_port(-1)
    with socket.socket() as taken:  # taken on this node: the next free one
        taken.bind(('', 10007))
        assert task.master_port(7) == 10008


def test_log_path_fills_in_the_output_pattern():
    assert slurm_jobs.log_path('/l/%x-%A_%a.out', '17', 3, 'sw') == Path('/l/sw-17_3.out')
    assert slurm_jobs.log_path('/l/100%%-%a', '17', 3, 'sw') == Path('/l/100%-3')


# --- the queue parser, what to submit --------------------------------------------------

def test_queue_lines_map_back_to_runs(tmp_path):
    runs = [standin_run(tmp_path, 'a', 3), standin_run(tmp_path, 'b', 3)]
    spaced = tmp_path / 'run files'
    path = slurm_jobs.write_run_file(spaced / 'r.json', runs, ArrayOptions('sw', tmp_path / 'l'))
    command = f'{SCRIPT} {path}'
    text = '\n'.join([
        f'40_0|40|0|RUNNING|vm|{command}',
        f'40_1|40|1|PENDING|(JobArrayTaskLimit)|{command}',
        '41|41|N/A|PENDING|(Dependency)|(null)',            # the report job
        f'39_0|39|0|COMPLETED|vm|{SCRIPT} {tmp_path}/gone.json',  # its run file is gone
        f'38_5|38|5|FAILED|vm|{command}',                   # no task 5 in the run file
    ])
    tasks = slurm_queue.parse_queue(text)
    assert tasks == [
        QueuedTask('a', '40_0', '40', 0, 'RUNNING', 'vm', tmp_path / 'l' / 'sw-40_0.out', path,
                   tmp_path / 'a', 'k1'),
        QueuedTask('b', '40_1', '40', 1, 'PENDING', '(JobArrayTaskLimit)',
                   tmp_path / 'l' / 'sw-40_1.out', path, tmp_path / 'b', 'k1')]
    assert [t.active for t in tasks] == [True, True]


def test_a_version_1_run_file_of_an_older_checkout_is_still_read_back(tmp_path):
    """Tasks queued before the run file carried 'key' keep their runs in the queue."""
    path = tmp_path / 'old.json'
    path.write_text(json.dumps({
        'format': 'mmdet-polyloss slurm runs', 'version': 1, 'job_name': 'sw',
        'log': f'{tmp_path}/sw-%A_%a.out', 'marker': '.sweep-run.json', 'stop_grace': 30,
        'tasks': {'0': {'name': 'a', 'work_dir': str(tmp_path / 'a'), 'train': ['true'],
                        'test': ['true'], 'marker_fields': {'key': 'k1'}, 'env': {}}}}))
    (task,) = slurm_queue.parse_queue(f'40_0|40|0|RUNNING|vm|{SCRIPT} {path}')
    assert (task.name, task.key, task.work_dir) == ('a', 'k1', tmp_path / 'a')


def test_read_queue_asks_squeue_for_the_sweeps_tasks_and_keeps_its_own_runs(tmp_path):
    """Two sweeps with a run 'a' each under one job name: ``runs`` picks this one's."""
    ours, theirs = standin_run(tmp_path / 'ours', 'a', 3), standin_run(tmp_path / 'theirs', 'a', 3)
    options = ArrayOptions('sw', tmp_path / 'l')
    our_file = slurm_jobs.write_run_file(tmp_path / 'ours.json', [ours], options)
    their_file = slurm_jobs.write_run_file(tmp_path / 'theirs.json', [theirs], options)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'squeue').write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/squeue.args\n'
        f'echo "8_0|8|0|FAILED|(NonZeroExitCode)|{SCRIPT} {our_file}"\n'
        f'echo "9_0|9|0|RUNNING|vm|{SCRIPT} {their_file}"\n')
    (bin_dir / 'squeue').chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    assert slurm_queue.read_queue('sw', env=env)['a'].job_id == '9_0'
    assert (tmp_path / 'squeue.args').read_text().split() == [
        '-h', '-r', '--me', '-t', 'all', '-o', '%i|%F|%K|%T|%R|%o', '--name=sw']
    mine = slurm_queue.read_queue('sw', env=env, runs=[ours])
    assert mine['a'].job_id == '8_0' and mine['a'].work_dir == tmp_path / 'ours' / 'a'
    assert not mine['a'].active
    assert slurm_queue.read_queue(job_ids=['8', '9'], env=env)
    assert (tmp_path / 'squeue.args').read_text().split()[-1] == '--jobs=8,9'
    (bin_dir / 'squeue').write_text('#!/bin/sh\necho "slurm_load_jobs error: down" >&2\n'
                                    'exit 1\n')
    with pytest.raises(UserError, match='reading the queue: squeue failed: slurm_load_jobs '
                                        'error: down'):
        slurm_queue.read_queue('sw', env=env)


def test_the_active_then_newest_task_stands_for_a_run(tmp_path):
    def task(job: str, state: str) -> QueuedTask:
        array, index = job.split('_')
        return QueuedTask('a', job, array, int(index), state, '', tmp_path, tmp_path)
    best = slurm_queue.latest_by_run([task('9_0', 'FAILED'), task('7_1', 'PENDING'),
                                     task('8_0', 'COMPLETED')])
    assert best['a'].job_id == '7_1'
    best = slurm_queue.latest_by_run([task('7_1', 'FAILED'), task('9_0', 'CANCELLED')])
    assert best['a'].job_id == '9_0'


def test_queue_states_and_the_marker_say_where_a_run_stands(tmp_path):
    """Queued, running and requeued tasks hold their run; a marker of other settings is no
    marker of the run."""
    runs = {name: standin_run(tmp_path, name, 3) for name in 'abcdef'}
    for name, content in (('d', {'key': 'k1', 'state': 'tested'}),
                          ('e', {'key': 'old', 'state': 'tested'}),
                          ('f', {'key': 'k1', 'state': 'training'})):
        runs[name].work_dir.mkdir()
        (runs[name].work_dir / MARKER).write_text(json.dumps(content))

    def queued(name: str, state: str) -> QueuedTask:
        return QueuedTask(name, '1_0', '1', 0, state, '', tmp_path, tmp_path)
    queue = {'a': queued('a', 'PENDING'), 'b': queued('b', 'RUNNING'),
             'c': queued('c', 'FAILED'), 'f': queued('f', 'REQUEUED')}
    assert [slurm_queue.run_status(run, queue).state for run in runs.values()] == [
        'queued', 'running', 'failed', 'done', 'new', 'queued']
    assert [name for name, task in queue.items() if task.active] == ['a', 'b', 'f']



def test_run_status_joins_the_marker_and_the_queue(tmp_path):
    runs = {name: standin_run(tmp_path, name, 3) for name in 'abcdefgh'}
    for name, state in (('a', 'tested'), ('b', 'training'), ('g', 'tested'), ('h', 'training')):
        runs[name].work_dir.mkdir()
        (runs[name].work_dir / MARKER).write_text(
            json.dumps({'key': 'k1', 'state': state}))

    def queued(name: str, state: str, reason: str = 'vm') -> QueuedTask:
        return QueuedTask(name, '4_2', '4', 2, state, reason, tmp_path / 'x.out', tmp_path)
    # squeue's %R: the node list while running or done, a (reason) while pending or failed.
    queue = {'c': queued('c', 'PENDING', '(Priority)'), 'd': queued('d', 'RUNNING'),
             'e': queued('e', 'REQUEUED', '(None)'),
             'f': queued('f', 'FAILED', '(NonZeroExitCode)'),
             'g': queued('g', 'COMPLETED'), 'h': queued('h', 'CANCELLED')}
    found = {n: slurm_queue.run_status(r, queue) for n, r in runs.items()}
    assert {n: (s.state, s.detail) for n, s in found.items()} == {
        'a': ('done', ''), 'b': ('stopped', ''), 'c': ('queued', 'PENDING (Priority)'),
        'd': ('running', 'RUNNING'), 'e': ('queued', 'REQUEUED'),
        'f': ('failed', 'FAILED (NonZeroExitCode)'), 'g': ('done', 'COMPLETED'),
        'h': ('failed', 'CANCELLED')}
    assert found['d'].job_id == '4_2' and found['d'].log == tmp_path / 'x.out'
    assert found['a'].job_id == '' and found['a'].log is None


TRAIN_FAILED = """[slurm_run.sh 10:00:00] a (7_0): attempt 1 on vm, MASTER_PORT=10007, stage 'new'
[slurm_run.sh 10:00:00] a (7_0): train: python tools/train.py cfg.py
Loads the config; an error in the word 'errors' of a warning
train.py: error: optim_wrapper.optimizer.lr=nan: expected a finite number
slurm_run.sh: error: a: training exited with status 2
"""


@pytest.mark.parametrize('log, cause, command_failed', [
    (TRAIN_FAILED, 'train.py: error: optim_wrapper.optimizer.lr=nan: expected a finite number',
     True),
    ('[slurm_run.sh 1] a (7_0): test: python tools/test.py\nTraceback (most recent call last):'
     '\nRuntimeError: CUDA out of memory\nslurm_run.sh: error: a: the test exited with '
     'status 1\n', 'RuntimeError: CUDA out of memory', True),
    ('slurm_run.sh: error: a: no new checkpoint in this attempt, so a requeue would only repeat '
     'it; give a longer --time\n', 'slurm_run.sh: error: a: no new checkpoint in this attempt, '
     'so a requeue would only repeat it; give a longer --time', True),
    # A later attempt stopped by TERM (cancelled, pre-empted): its error is not the run's.
    (TRAIN_FAILED + '[slurm_run.sh 10:05:00] a (7_0): attempt 2 on vm\n[slurm_run.sh 10:05:09] '
     'a (7_0): TERM (requeue, pre-emption or cancel): stopped the command\n', '', False),
    ('slurm_run.sh: error: a: another job holds /w/.slurm-run.lock (5_0 on vm)\n',
     'slurm_run.sh: error: a: another job holds /w/.slurm-run.lock (5_0 on vm)', False),
    ('[slurm_run.sh 1] a (7_0): train: x\nslurm_run.sh: error: a: training exited with status 9\n',
     'slurm_run.sh: error: a: training exited with status 9', True),
    ('sweep_report.py: error: no run has a test of the checkpoint its training ended with yet\n',
     'sweep_report.py: error: no run has a test of the checkpoint its training ended with yet',
     False),
    (None, '', False),
])
def test_a_logs_end_gives_the_cause_and_whether_a_resubmission_would_repeat_it(
        tmp_path, log, cause, command_failed):
    path = tmp_path / 'task.out'
    if log is not None:
        path.write_text('earlier attempt\ntrain.py: error: an old one\n' * 3000 + log)
    assert slurm_jobs.log_end(path) == (cause, command_failed)


def test_a_failed_run_is_shown_with_its_cause(tmp_path):
    """The last error line of its task's log; Slurm's lack of a log; a task of other
    settings (a resubmission runs the new ones); a task Slurm has forgotten, found
    through the marker's job id."""
    run = standin_run(tmp_path, 'a', 3)
    run.work_dir.mkdir()
    log = tmp_path / 'sw-4_2.out'
    log.write_text(TRAIN_FAILED)

    def failed(**fields) -> QueuedTask:
        return QueuedTask(**{**dict(name='a', job_id='4_2', array_id='4', index=2,
                                    state='FAILED', reason='(NonZeroExitCode)', log=log,
                                    run_file=tmp_path, key='k1'), **fields})
    status = slurm_queue.run_status(run, {'a': failed()})
    assert (status.state, status.cause, status.command_failed) == (
        'failed', 'train.py: error: optim_wrapper.optimizer.lr=nan: expected a finite number',
        True)
    assert not slurm_queue.run_status(run, {'a': failed(key='k0')}) \
        .command_failed
    gone = slurm_queue.run_status(run, {'a': failed(log=tmp_path / 'logs' / 'x.out',
                                                    reason='(JobLaunchFailure)')})
    assert gone.log is None and gone.detail == 'FAILED (JobLaunchFailure)'
    assert gone.cause == (f'Slurm wrote no log: it could not open {tmp_path}/logs/x.out or '
                          "start the job script (the node's slurmd log says which)")
    (run.work_dir / MARKER).write_text(
        json.dumps({'key': 'k1', 'state': 'training', 'slurm_job': '4_2'}))
    options = ArrayOptions('sw', tmp_path)
    forgotten = slurm_queue.run_status(run, {}, options=options)
    assert (forgotten.state, forgotten.job_id, forgotten.log, forgotten.command_failed) == (
        'failed', '4_2', log, True)
    assert slurm_queue.run_status(run, {}).state == 'stopped'


def test_a_report_job_that_fails_under_wait_is_its_own_error(tmp_path):
    """sbatch --wait exits with the job's status: the error is the report's last error
    line, not 'sbatch failed: exit status 2'."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'sbatch').write_text('#!/bin/sh\necho 42\nexit 2\n')
    (bin_dir / 'sbatch').chmod(0o755)
    log = tmp_path / 'report.out'
    log.write_text('sweep_report.py: error: no run has a test of the checkpoint its training '
                   'ended with yet: a: no checkpoint yet\n')
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    with pytest.raises(UserError) as error:
        slurm_jobs.submit_report(['true'], ['41'], 'r', log, env=env, wait=True)
    assert str(error.value) == (
        'the report job 42 failed (exit status 2): sweep_report.py: error: no run has a test '
        f'of the checkpoint its training ended with yet: a: no checkpoint yet (its log: {log})')


# --- the job script, outside Slurm (a stand-in scontrol records its arguments) --------

def job_script(tmp_path: Path, runs: List[SlurmRun], index: int = 0,
               **env: str) -> subprocess.Popen:
    """Start tools/slurm_run.sh for task ``index`` of ``runs`` as array task 77_<index>
    (job id 12345), with a stand-in ``scontrol`` that appends its arguments to
    ``tmp_path/scontrol.log``."""
    run_file = tmp_path / 'runs.json'
    if not run_file.exists():
        slurm_jobs.write_run_file(run_file, runs, ArrayOptions('sw', tmp_path, stop_grace=5))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / 'scontrol'
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    scontrol.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    environment.update(PATH=f'{bin_dir}:{os.environ["PATH"]}', STANDIN_SECONDS='0.2',
                       POLYLOSS_PYTHON=sys.executable, SLURM_JOB_ID='12345',
                       SLURM_ARRAY_JOB_ID='77', SLURM_ARRAY_TASK_ID=str(index), **env)
    return subprocess.Popen(['bash', str(SCRIPT), str(run_file)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_job_script_trains_then_tests_and_marks_the_run(tmp_path):
    run = standin_run(tmp_path, 'a', 3)
    result = finish(job_script(tmp_path, [run]))
    assert result.returncode == 0, result.stderr
    assert marker(run.work_dir) == {'key': 'k1', 'state': 'tested', 'slurm_job': '77_0'}
    (start,) = events(run.work_dir, 'start')
    assert start['count'] == 0 and start['port'] == str(task.master_port(12345))
    result_file = json.loads((run.work_dir / 'result.json').read_text())
    assert result_file == {'checkpoint': str(run.work_dir / 'iter_3.pth'), 'count': 3,
                           'port': str(task.master_port(12345))}
    assert '77_0' in (run.work_dir / '.slurm-run.lock').read_text()
    # Each step's wall time: the stand-in trains 3 x 0.2 s.
    trained = re.search(r'\(77_0\): trained in (\d+) s, tested in \d+ s$', result.stdout, re.M)
    assert int(trained.group(1)) >= 1
    # Again: the run is tested, nothing runs.
    again = finish(job_script(tmp_path, [run]))
    assert again.returncode == 0 and 'already tested: nothing to do' in again.stdout
    assert len(events(run.work_dir, 'start')) == 1
    assert not (tmp_path / 'scontrol.log').exists()


def test_a_trained_run_goes_straight_to_its_test(tmp_path):
    run = standin_run(tmp_path, 'a', 3)
    assert finish(job_script(tmp_path, [run])).returncode == 0
    (run.work_dir / MARKER).write_text('{"key": "k1", "state": "trained"}')
    (run.work_dir / 'result.json').unlink()
    result = finish(job_script(tmp_path, [run]))
    assert result.returncode == 0, result.stderr
    assert len(events(run.work_dir, 'start')) == 1 and (run.work_dir / 'result.json').is_file()
    assert re.search(r'\(77_0\): tested in \d+ s$', result.stdout, re.M)  # no training


def test_usr1_stops_the_training_and_requeues_the_task_which_then_resumes(tmp_path):
    runs = [standin_run(tmp_path, 'a', 3), standin_run(tmp_path, 'b', 12)]
    work_dir = runs[1].work_dir
    process = job_script(tmp_path, runs, index=1)
    wait_until(lambda: len(events(work_dir, 'iteration')) >= 2, 30, 'two iterations')
    process.send_signal(signal.SIGUSR1)
    result = finish(process)
    assert result.returncode == 0, result.stderr
    assert 'USR1: the time limit is near' in result.stdout and 'requeued' in result.stdout
    # The task itself is requeued, not the whole array (77 is task 0's job id too).
    assert (tmp_path / 'scontrol.log').read_text() == 'requeue 77_1\n'
    assert len(events(work_dir, 'term')) == 1  # the command was stopped by TERM, not killed
    assert marker(work_dir)['state'] == 'training'
    stopped_at = int((work_dir / 'count').read_text())
    # Slurm starts the task again: it resumes the count.
    result = finish(job_script(tmp_path, runs, index=1, SLURM_RESTART_COUNT='1'))
    assert result.returncode == 0, result.stderr
    starts = events(work_dir, 'start')
    assert [s['count'] for s in starts] == [0, stopped_at] and stopped_at >= 2
    assert [e['count'] for e in events(work_dir, 'iteration')] == list(range(1, 13))
    assert 'attempt 2' in result.stdout and marker(work_dir)['state'] == 'tested'


def test_usr1_without_a_new_checkpoint_does_not_requeue(tmp_path):
    run = standin_run(tmp_path, 'a', 30, '--no-checkpoint')
    process = job_script(tmp_path, [run])
    wait_until(lambda: events(run.work_dir, 'iteration'), 30, 'an iteration')
    process.send_signal(signal.SIGUSR1)
    result = finish(process)
    assert result.returncode == 3
    assert 'no new checkpoint in this attempt, so a requeue would only repeat it' in \
        result.stderr
    assert not (tmp_path / 'scontrol.log').exists()


@pytest.mark.parametrize('stop, status, said', [
    (signal.SIGTERM, 143, 'TERM (requeue, pre-emption or cancel): stopped the command'),
    (signal.SIGINT, 130, 'INT: stopped the command')])  # Ctrl-C on a task run by hand
def test_term_or_int_stops_the_command_and_leaves_the_requeue_to_slurm(tmp_path, stop, status,
                                                                       said):
    run = standin_run(tmp_path, 'a', 30)
    process = job_script(tmp_path, [run])
    wait_until(lambda: events(run.work_dir, 'iteration'), 30, 'an iteration')
    process.send_signal(stop)
    result = finish(process)
    assert result.returncode == status and said in result.stdout
    assert len(events(run.work_dir, 'term')) == 1 and 'Traceback' not in result.stderr
    assert not (tmp_path / 'scontrol.log').exists()


def test_a_failing_command_fails_the_task_with_its_status(tmp_path):
    run = SlurmRun('f', tmp_path / 'f', [sys.executable, str(STANDIN), 'fail', '3'], ['true'])
    result = finish(job_script(tmp_path, [run]))
    assert result.returncode == 3 and 'f: training exited with status 3' in result.stderr
    assert marker(run.work_dir)['state'] == 'training'


def test_a_command_that_cannot_start_or_is_killed_fails_as_a_shell_says(tmp_path):
    """127 for a program that is not there, 128 + N for one killed by signal N: the statuses
    a shell gives, which the sweep reads as a failed command (not resubmitted by itself)."""
    missing = SlurmRun('m', tmp_path / 'm', [str(tmp_path / 'no-such-train')], ['true'])
    result = finish(job_script(tmp_path, [missing]))
    assert result.returncode == 127 and 'm: training exited with status 127' in result.stderr
    log = tmp_path / 'm.log'
    log.write_text(result.stdout + result.stderr)
    assert slurm_jobs.log_end(log)[1]
    killed = SlurmRun('k', tmp_path / 'k', [sys.executable, '-c', 'import os, signal; '
                                            'os.kill(os.getpid(), signal.SIGKILL)'], ['true'])
    (tmp_path / 'runs.json').unlink()
    result = finish(job_script(tmp_path, [killed]))
    assert result.returncode == 137 and 'k: training exited with status 137' in result.stderr


def test_a_marker_of_other_settings_is_refused(tmp_path):
    run = standin_run(tmp_path, 'a', 3)
    run.work_dir.mkdir()
    (run.work_dir / MARKER).write_text('{"key": "old", "state": "tested"}')
    result = finish(job_script(tmp_path, [run]))
    assert result.returncode == 2
    assert "holds key='old', the run file says key='k1'" in result.stderr
    assert not events(run.work_dir)


def test_a_work_dir_it_cannot_write_in_is_one_line(tmp_path):
    """Not a traceback from the job script's helper; nothing is run."""
    for work_dir in ('/sys/kernel', '/sys/polyloss_not_made'):  # unwritable, even for root
        run = SlurmRun('u', Path(work_dir), ['false'], ['false'], 'k1')
        (tmp_path / 'runs.json').unlink(missing_ok=True)
        result = finish(job_script(tmp_path, [run]))
        assert result.returncode == 2
        assert result.stderr.splitlines()[-1] == (
            f'slurm_run.sh: error: u: cannot write in the work dir {work_dir} (the line above '
            'says why)')
        assert 'Traceback' not in result.stderr and 'train:' not in result.stdout


def test_a_run_held_by_another_job_is_not_trained_twice(tmp_path):
    run = standin_run(tmp_path, 'a', 3)
    run.work_dir.mkdir()
    with open(run.work_dir / '.slurm-run.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write('5_0 on node7')
        lock.flush()
        result = finish(job_script(tmp_path, [run]))
    assert result.returncode == 1
    assert 'another job holds' in result.stderr and '5_0 on node7' in result.stderr
    assert not events(run.work_dir)


def test_job_script_usage(tmp_path):
    result = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and 'usage: slurm_run.sh RUN_FILE [INDEX]' in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    result = subprocess.run(['bash', str(SCRIPT), str(tmp_path / 'r.json')], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and 'no task index' in result.stderr
    result = subprocess.run(['bash', str(SCRIPT), str(tmp_path / 'r.json'), '0'], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and 'cannot read the run file' in result.stderr


# --- the test cluster's set-up (tests/slurm_cluster.py) ------------------------------

def test_cluster_config_has_the_measured_settings(tmp_path):
    text = slurm_cluster_module.slurm_conf(tmp_path, 'node1', [7001, 7002], 2, 1000,
                                           tmp_path / 'm.socket', 'root')
    lines = text.splitlines()
    for line in ('SlurmctldHost=node1(127.0.0.1)', 'SlurmctldPort=7001', 'SlurmdPort=7002',
                 f'AuthInfo=socket={tmp_path}/m.socket,cred_expire=10',
                 'SchedulerParameters=bf_interval=1,sched_interval=2', 'JobRequeue=1',
                 'MinJobAge=3600', 'DependencyParameters=kill_invalid_depend',
                 'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
                 'NodeName=node1 NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN',
                 'PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP'):
        assert line in lines
    assert len(set(slurm_cluster_module.free_ports(3))) == 3


def test_without_root_missing_slurm_is_a_reason_not_an_install(monkeypatch):
    monkeypatch.setattr(slurm_cluster_module, 'missing_programs', lambda: ['slurmctld'])
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    monkeypatch.setattr(subprocess, 'run', None)  # nothing may be run
    with pytest.raises(slurm_cluster_module.ClusterUnavailable,
                       match='Slurm is not installed .slurmctld missing. and installing '
                             'slurm-wlm and munge needs root'):
        slurm_cluster_module.ensure_packages()


@pytest.mark.parametrize('ci, outcome', [({}, pytest.skip.Exception),
                                         ({'CI': 'false'}, pytest.skip.Exception),
                                         ({'CI': 'true'}, pytest.fail.Exception)])
def test_a_cluster_that_cannot_start_skips_the_tests_except_in_ci(monkeypatch, ci, outcome):
    def unavailable():
        raise slurm_cluster_module.ClusterUnavailable('no root to install slurm-wlm')
    monkeypatch.setattr(slurm_cluster_module.SlurmCluster, 'start', unavailable)
    with pytest.raises(outcome, match='no root to install slurm-wlm'):
        slurm_cluster_module.start_for_tests(ci)


# --- on a real cluster ------------------------------------------------------------------

def job_state(cluster, job_id: str) -> str:
    out = cluster.command('squeue', '-h', '-t', 'all', '-j', job_id, '-o', '%T').stdout
    return out.strip()


@pytest.mark.slow
def test_a_sweep_array_survives_requeue_and_time_limit_on_a_real_cluster(slurm_cluster,
                                                                          tmp_path):
    """Three runs as one array on a 2-CPU node, two at a time, with a 2-minute
    limit and USR1 60 s before it: 'requeued' (20 s of training) is requeued
    by ``scontrol requeue`` after 5 s; 'limited' (90 s) meets its time limit
    (USR1 comes 30 to 60 s after the start, as Slurm checks every 30 s, and
    later if slurmctld is slow); 'failing' fails. Then a report job that waits
    for the array."""
    cluster, env = slurm_cluster, slurm_cluster.env
    env = dict(env, STANDIN_SECONDS='1')
    requeued = standin_run(tmp_path, 'requeued', 20)
    limited = standin_run(tmp_path, 'limited', 90)
    failing = SlurmRun('failing', tmp_path / 'failing',
                       [sys.executable, str(STANDIN), 'fail', '3'], ['true'], 'k1')
    runs = [requeued, limited, failing]
    options = ArrayOptions('sweep_test', tmp_path / 'logs', partition=cluster.partition,
                           time='2', max_parallel=2, signal_seconds=60, stop_grace=5)
    run_dir = tmp_path / 'slurm'
    timings: Dict[str, float] = {}
    start = time.monotonic()

    submitted = slurm_jobs.submit_array(runs, options, run_dir, env)
    array = submitted.array_id
    assert submitted.job_ids == {'requeued': f'{array}_0', 'limited': f'{array}_1',
                                 'failing': f'{array}_2'}
    report = slurm_jobs.submit_report(
        [sys.executable, '-c', 'import pathlib, sys; root = pathlib.Path(sys.argv[1]); '
         '(root / "report.txt").write_text("".join(sorted(p.parent.name + "\\n" for p in '
         'root.glob("*/result.json"))))', str(tmp_path)],
        [array], 'sweep_test-report', tmp_path / 'logs' / 'report.out', env=env)

    def both_running():
        queue = slurm_queue.read_queue('sweep_test', env=env)
        return queue if all(queue.get(n) and queue[n].state == 'RUNNING'
                            for n in ('requeued', 'limited')) else None
    queue = wait_until(both_running, 60, 'two runs running at once')
    timings['both running'] = time.monotonic() - start
    assert queue['requeued'].job_id == f'{array}_0' and queue['limited'].job_id == f'{array}_1'
    assert queue['failing'].state == 'PENDING'
    assert [slurm_queue.run_status(r, queue).state for r in runs] == ['running', 'running',
                                                                      'queued']
    assert queue['requeued'].log == tmp_path / 'logs' / f'sweep_test-{array}_0.out'
    assert job_state(cluster, report) == 'PENDING'

    wait_until(lambda: len(events(requeued.work_dir, 'iteration')) >= 5, 60, 'five iterations')
    cluster.command('scontrol', 'requeue', f'{array}_0')
    requeue_time = time.time()
    second = wait_until(lambda: events(requeued.work_dir, 'start')[1:], 90,
                        'the requeued run to start again')[0]
    timings['scontrol requeue -> start again'] = second['time'] - requeue_time

    def finished():
        queue = slurm_queue.read_queue('sweep_test', env=env)
        return queue if len(queue) == 3 and not any(t.active for t in queue.values()) else None
    queue = wait_until(finished, 300, 'the array to finish', interval=2)
    timings['array finished'] = time.monotonic() - start
    assert {n: t.state for n, t in queue.items()} == {
        'requeued': 'COMPLETED', 'limited': 'COMPLETED', 'failing': 'FAILED'}
    assert [(s.state, s.detail) for s in (slurm_queue.run_status(r, queue) for r in runs)] == [
        ('done', 'COMPLETED'), ('done', 'COMPLETED'), ('failed', 'FAILED (NonZeroExitCode)')]

    # Both ran at once, each on its own rendezvous port.
    first = {run.name: events(run.work_dir, 'start')[0] for run in (requeued, limited)}
    assert abs(first['requeued']['time'] - first['limited']['time']) < 10
    ports = {name: int(e['port']) for name, e in first.items()}
    assert ports['requeued'] != ports['limited']
    for name, event in first.items():
        assert ports[name] == task.master_port(int(event['job']))

    # Requeued and time-limited runs resumed their count: every iteration once.
    for run, iterations in ((requeued, 20), (limited, 90)):
        starts = events(run.work_dir, 'start')
        assert len(starts) >= 2, (run.name, starts)
        assert starts[1]['restart'] >= 1 and starts[1]['count'] > 0, (run.name, starts)
        assert [e['count'] for e in events(run.work_dir, 'iteration')] == \
            list(range(1, iterations + 1)), run.name
        assert events(run.work_dir, 'term'), run.name  # stopped by TERM, not killed
        result = json.loads((run.work_dir / 'result.json').read_text())
        assert result['count'] == iterations
        assert result['checkpoint'] == str(run.work_dir / f'iter_{iterations}.pth')
        assert marker(run.work_dir)['state'] == 'tested'
    log = queue['limited'].log.read_text()
    assert 'USR1: the time limit is near' in log and 'requeued' in log, log
    assert (limited.work_dir / f'slurm-{array}_1.out').resolve() == queue['limited'].log
    limited_starts = events(limited.work_dir, 'start')
    limited_terms = events(limited.work_dir, 'term')
    timings['limited: start -> USR1 stop'] = limited_terms[0]['time'] - limited_starts[0]['time']
    timings['limited: USR1 stop -> start again'] = \
        limited_starts[1]['time'] - limited_terms[0]['time']
    timings['limited: attempts'] = len(limited_starts)
    assert 'failing: training exited with status 3' in queue['failing'].log.read_text()
    assert marker(failing.work_dir)['state'] == 'training'

    # The report job ran after every task, whatever their ends.
    wait_until(lambda: job_state(cluster, report) == 'COMPLETED', 60, 'the report job')
    assert (tmp_path / 'report.txt').read_text() == 'limited\nrequeued\n'

    # A task of a tested run (submitted anyway) exits at once.
    again = slurm_jobs.submit_array([requeued], options, run_dir, env)
    wait_until(lambda: job_state(cluster, again.job_ids['requeued']) == 'COMPLETED', 60,
               'the tested run\'s task')
    assert 'already tested: nothing to do' in again.logs['requeued'].read_text()
    assert len(events(requeued.work_dir, 'start')) == 2
    # A report job that the submitter waits for (sbatch --wait): back once it has ended.
    waited = time.monotonic()
    slurm_jobs.submit_report([sys.executable, '-c', 'print("reported")'], [array],
                             'sweep_test-report', tmp_path / 'logs' / 'waited.out', env=env,
                             wait=True)
    timings['report with wait'] = time.monotonic() - waited
    assert (tmp_path / 'logs' / 'waited.out').read_text() == 'reported\n'
    timings['total'] = time.monotonic() - start
    print('timings (s):', {k: round(v, 1) for k, v in timings.items()})


@pytest.mark.slow
def test_a_cancelled_task_stops_its_command_and_stays_cancelled(slurm_cluster, tmp_path):
    """scancel sends TERM as a requeue does: the job script stops its command and
    does not requeue the task (a cancelled run stays cancelled)."""
    env = dict(slurm_cluster.env, STANDIN_SECONDS='0.5')
    run = standin_run(tmp_path, 'cancelled', 60)
    options = ArrayOptions('sweep_cancel', tmp_path / 'logs', stop_grace=5)
    submitted = slurm_jobs.submit_array([run], options, tmp_path / 'slurm', env)
    wait_until(lambda: events(run.work_dir, 'iteration'), 60, 'an iteration')
    slurm_cluster.command('scancel', submitted.job_ids['cancelled'])
    wait_until(lambda: job_state(slurm_cluster, submitted.job_ids['cancelled']) == 'CANCELLED',
               30, 'the task to be cancelled')
    wait_until(lambda: events(run.work_dir, 'term'), 10, 'the command to get TERM')
    time.sleep(3)
    assert job_state(slurm_cluster, submitted.job_ids['cancelled']) == 'CANCELLED'
    log = submitted.logs['cancelled'].read_text()
    assert 'TERM (requeue, pre-emption or cancel): stopped the command' in log
    assert 'requeued' not in log and len(events(run.work_dir, 'start')) == 1
    assert marker(run.work_dir)['state'] == 'training'
