"""tools/sweep.py --launcher none: one run is never trained twice at once (the
per-run lock the Slurm job script takes too), a stopped driver leaves no tool
running, and a started run whose checkpoint is gone says what to do."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_sweep import POLY, _key_of, sweep

from tools.lib.sweep.run import LOCK_NAME, Run

from train_helpers import ROOT, make_workspace

NAME = 'retinanet_tiny_fpn_poly1-eps-1_shapes'


def processes_naming(text: str):
    """Ids of the processes whose command line contains ``text``."""
    found = []
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
            except OSError:
                continue
            if text in command:
                found.append(int(entry.name))
    return found


def test_a_run_another_process_holds_is_skipped_not_trained_twice(tmp_path):
    """Tried: two sweeps on one root both trained the same run in the same work dir."""
    work_dir = tmp_path / NAME
    with Run(NAME, '', work_dir).lock():
        result = sweep([POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path)])
    assert result.returncode == 2, result.stdout + result.stderr
    assert f'[sweep] {NAME}: skipped, {work_dir} is being run by another process (pid ' \
        f'{os.getpid()} on ' in result.stdout
    assert result.stderr == (f'sweep.py: error: 1 runs are not done ({NAME}): another process '
                             f'held {NAME} (skipped above); the sweep that finishes last writes '
                             'the report, or rerun this one then\n')
    assert 'tools/train.py' not in result.stdout
    assert sorted(p.name for p in work_dir.iterdir()) == ['.slurm-run.lock']


def test_the_lock_is_the_job_scripts(tmp_path):
    """tools/slurm_run.sh's flock on the same file excludes a local driver."""
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    holder = subprocess.Popen(['flock', str(work_dir / LOCK_NAME), 'sleep', '30'],
                              start_new_session=True)
    try:
        time.sleep(0.5)
        assert Run('run', '', work_dir).holder() is not None
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which holds the lock
        holder.wait()
    assert Run('run', '', work_dir).holder() is None


def test_a_killed_driver_leaves_the_lock_with_its_training(tmp_path):
    """Tried: a SIGKILLed driver (the OOM killer, kill -9) freed the lock while its
    train.py went on, so a second driver could train the same run beside it. The step's
    command inherits the lock; it is free once the command ends."""
    work_dir, pid_file = tmp_path / 'run', tmp_path / 'child.pid'
    child = f'import os, time; open({str(pid_file)!r}, "w").write(str(os.getpid())); ' \
            'time.sleep(120)'
    driver = subprocess.Popen([sys.executable, '-c', (
        f'import sys; sys.path.insert(0, {str(ROOT)!r})\n'
        'from tools.lib.sweep.run import Run\n'
        f'run = Run("run", "", {str(work_dir)!r})\n'
        'with run.lock(holder="the driver"):\n'
        f'    run.train_then_test([sys.executable, "-c", {child!r}], lambda c: ["true"])\n')])
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    try:
        driver.kill()
        driver.wait(timeout=30)
        assert Path(f'/proc/{child_pid}').exists()  # the training goes on
        assert Run('run', '', work_dir).holder().startswith('the driver on ')
    finally:
        os.kill(child_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # its descriptors close as it dies
    while Run('run', '', work_dir).holder() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_stopped_child_group_ends_with_its_driver(tmp_path):
    """run_child: SIGTERM to the driver stops the child (and its children) first."""
    pid_file = tmp_path / 'child.pid'
    child = f'import os, time; open({str(pid_file)!r}, "w").write(str(os.getpid())); ' \
            'time.sleep(120)'
    driver = subprocess.Popen([sys.executable, '-c', (
        f'import sys; sys.path.insert(0, {str(ROOT)!r})\n'
        'from tools.lib.sweep.run import Stopped, run_child\n'
        'try:\n'
        f'    run_child([sys.executable, "-c", {child!r}], grace=5)\n'
        'except Stopped as stopped:\n'
        '    print("stopped by", stopped); sys.exit(143)\n')],
        stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=30)
    assert driver.returncode == 143 and out == 'stopped by SIGTERM\n'
    assert not Path(f'/proc/{pid_file.read_text()}').exists()


def test_sigterm_to_the_sweep_ends_its_train_py(tmp_path):
    """Tried: a SIGTERM to the driver left tools/train.py training, orphaned."""
    workspace = make_workspace(tmp_path, num_train=4, num_val=2)
    root, config = tmp_path / 'sweep', str(ROOT / POLY)
    driver = subprocess.Popen([sys.executable, str(ROOT / 'tools' / 'sweep.py'), config,
                               '--epsilons', '-1', '--work-dir-root', str(root)],
                              cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 120
    while not processes_naming(f'train.py {config} --work-dir {root}'):
        assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()
        time.sleep(0.2)
    time.sleep(1)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 2, out + err
    assert err.strip().splitlines()[-1] == (
        f'sweep.py: error: stopped by SIGTERM: {NAME} was stopped in the middle; rerun the '
        'sweep to resume it')
    assert not processes_naming(f'train.py {config} --work-dir {root}')
    marker = json.loads((root / NAME / '.sweep-run.json').read_text())
    assert marker['state'] == 'training'


def test_a_started_run_whose_checkpoint_is_gone_says_force_retrains_it(tmp_path):
    """Tried: 'rerun the sweep to resume' came back on every rerun."""
    run = tmp_path / NAME
    run.mkdir()
    (run / '.sweep-run.json').write_text(json.dumps(
        {'key': _key_of(tmp_path, NAME), 'state': 'training'}))
    (run / 'last_checkpoint').write_text(str(run / 'epoch_3.pth'))
    result = sweep([POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 2
    assert result.stderr == (
        f'sweep.py: error: the started run (it would resume from that checkpoint) in {run} is '
        f'damaged ({run}/epoch_3.pth is missing or empty); --force (FORCE=1 for '
        'tools/run_demo.sh) retrains it\n')
