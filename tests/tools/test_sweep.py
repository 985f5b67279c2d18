"""tools/sweep.py: the plan (runs, names, overrides, commands per launcher),
where each run stands (done, resume, test, changed), user errors, and a tiny
sweep end to end."""
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from train_helpers import FAST, ROOT, TIMEOUT, load_tool, make_workspace, run_in_process

SCRIPT = ROOT / 'tools' / 'sweep.py'
POLY = 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'
FOCAL = 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
COCO_POLY = 'configs/retinanet/retinanet_r50_fpn_poly1-eps-1_1x_coco.py'
COCO_FOCAL = 'configs/retinanet/retinanet_r50_fpn_1x_coco.py'
MASK_RCNN = 'configs/mask_rcnn/mask-rcnn_r50_fpn_poly1-eps-1_1x_coco.py'


def sweep(args: List[str]) -> subprocess.CompletedProcess:
    """tools/sweep.py in this process, from the repository root (plans, dry runs,
    refusals: nothing that trains)."""
    with contextlib.chdir(ROOT):
        return run_in_process(load_tool('sweep').main, args, 'sweep.py')


def sweep_subprocess(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=TIMEOUT)


def plan_lines(out: str) -> List[List[str]]:
    """The rows of the plan: name, state, options."""
    lines = out.split('[sweep] ', 2)[1].splitlines()[1:]
    return [line.split() for line in lines if line.startswith('  ') and line.strip()]


def test_dry_run_plans_every_epsilon_and_seed_with_the_baseline(tmp_path):
    result = sweep([POLY, '--baseline', FOCAL, '--epsilons', '-1', '-.5', '1', '--seeds',
                    '0', '02', '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 0, result.stderr
    rows = plan_lines(result.stdout)
    names = [row[0] for row in rows]
    assert names == ['retinanet_tiny_fpn_focal_shapes', 'retinanet_tiny_fpn_poly1-eps-1_shapes',
                     'retinanet_tiny_fpn_poly1-eps-0.5_shapes',
                     'retinanet_tiny_fpn_poly1-eps+1_shapes',
                     'retinanet_tiny_fpn_focal_shapes_seed2',
                     'retinanet_tiny_fpn_poly1-eps-1_shapes_seed2',
                     'retinanet_tiny_fpn_poly1-eps-0.5_shapes_seed2',
                     'retinanet_tiny_fpn_poly1-eps+1_shapes_seed2']
    assert all(row[1] == 'new' for row in rows)
    assert rows[0][2:] == ['randomness.seed=0']  # the baseline: no epsilon
    assert rows[6][2:] == ['randomness.seed=2', 'model.bbox_head.loss_cls.epsilon=-0.5']
    train = [line for line in result.stdout.splitlines() if 'tools/train.py' in line]
    test = [line for line in result.stdout.splitlines() if 'tools/test.py' in line]
    assert len(train) == len(test) == 8
    assert f'--work-dir {tmp_path}/retinanet_tiny_fpn_poly1-eps+1_shapes_seed2' in train[7]
    assert 'model.bbox_head.loss_cls.epsilon=1.0' in test[7]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize('config, epsilon, seed, name', [
    ('configs/x/retinanet_poly1-eps-1_coco.py', '-0.5', 0, 'retinanet_poly1-eps-0.5_coco'),
    ('retinanet_steps1000_poly1-eps-1_shapes.py', '+1', 2,
     'retinanet_steps1000_poly1-eps+1_shapes_seed2'),
    ('retinanet_steps1000_poly1.py', '-1', 0, 'retinanet_steps1000_poly1_eps-1'),
    ('eps1_retinanet.py', '+0.5', 0, 'eps+0.5_retinanet'),
    ('retinanet_focal.py', None, 1, 'retinanet_focal_seed1'),
])
def test_run_names_replace_the_configs_own_epsilon_part(config, epsilon, seed, name):
    """Only an ``eps`` word: ``steps1000`` once became ``steps-0.5``, and two runs of
    other epsilons kept the config's ``eps-1`` in their names."""
    sys.path.insert(0, str(ROOT))
    from tools.lib.sweep.plan import run_name
    assert run_name(config, epsilon, seed) == name


def test_launchers_and_the_two_stage_loss_key(tmp_path):
    result = sweep([MASK_RCNN, '--epsilons', '-1', '--launcher', 'pytorch', '--gpus', '8',
                    '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 0, result.stderr
    assert 'model.roi_head.bbox_head.loss_cls.epsilon=-1.0' in result.stdout
    assert f"tools/dist_train.sh {MASK_RCNN} 8 --work-dir" in result.stdout
    assert 'tools/dist_test.sh' in result.stdout
    result = sweep([COCO_POLY, '--baseline', COCO_FOCAL, '--epsilons', '-1', '0.5',
                    '--launcher', 'slurm', '--partition', 'gpu', '--gpus', '8',
                    '--cpus-per-task', '5', '--max-parallel', '4', '--time', '8:00:00',
                    '--sbatch-args=--account=det --qos=low',
                    '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 0, result.stderr
    sbatch = next(line for line in result.stdout.splitlines() if '$ sbatch' in line)
    for word in ('--array=0-2%4', '--requeue', '--signal=B:USR1@300', '--partition=gpu',
                 '--time=8:00:00', '--ntasks=8', '--gpus-per-task=1', '--cpus-per-task=5',
                 '--account=det --qos=low', 'tools/slurm_run.sh'):
        assert word in sbatch, word
    work_dir = tmp_path / 'retinanet_r50_fpn_poly1-eps+0.5_1x_coco'
    assert (f'$ srun --kill-on-bad-exit=1 {sys.executable} -u {ROOT}/tools/train.py {COCO_POLY} '
            f'--work-dir {work_dir} --cfg-options randomness.seed=0 '
            'model.bbox_head.loss_cls.epsilon=0.5 --resume --launcher slurm') in result.stdout
    assert f'tools/test.py {COCO_POLY} @LAST_CHECKPOINT@ --work-dir {work_dir}' in result.stdout
    assert not any(tmp_path.iterdir())  # a dry run submits and writes nothing


def test_amp_trains_every_run_in_mixed_precision_as_train_py_amp(tmp_path, monkeypatch):
    """--amp is the sweep's spelling of train.py --amp: the same config keys for every run
    (so a run's key tells fp32 and AMP runs apart); without a GPU it is refused before any
    run starts."""
    sys.path.insert(0, str(ROOT))
    from tools.lib.sweep import plan as sweep_plan
    result = sweep([POLY, '--baseline', FOCAL, '--epsilons', '-1', '--amp',
                    '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 0, result.stderr
    amp = ['+optim_wrapper.type=AmpOptimWrapper', '+optim_wrapper.loss_scale=dynamic']
    assert [row[-2:] for row in plan_lines(result.stdout)] == [amp, amp]
    train = [line for line in result.stdout.splitlines() if 'tools/train.py' in line]
    assert len(train) == 2 and all(line.endswith(' '.join(amp)) for line in train)
    from tools.lib.cli import read_config
    resolved = sweep_plan.with_options(read_config(POLY), amp)
    assert (resolved.optim_wrapper.type, resolved.optim_wrapper.loss_scale) == \
        ('AmpOptimWrapper', 'dynamic')
    fp32, mixed = (sweep_plan.plan_runs(POLY, ['-1'], [0], None, tmp_path, options, [])[0]
                   for options in ([], amp))
    assert fp32.key != mixed.key
    import mmengine.device  # a machine without a GPU, on any machine
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cpu')
    result = sweep([POLY, '--epsilons', '-1', '--amp', '--work-dir-root', str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr == ('sweep.py: error: --amp: mixed precision (AmpOptimWrapper) '
                             'trains on a CUDA, NPU or MLU device, and this machine has none '
                             "(mmengine finds 'cpu'); train without it\n")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('args,message', [
    ([POLY, '--epsilons', '-1.5'], "--epsilons must hold decimal numbers >= -1, got '-1.5'"),
    ([POLY, '--epsilons', '-1', '--seeds', str(2 ** 32)], '--seeds must hold seeds below 2^32'),
    ([POLY, '--epsilons', '-1', '--seeds', '-3'], '--seeds must hold non-negative integers'),
    ([POLY, '--epsilons', '-1', '--seeds', '1', '01'], '--seeds lists seed 1 twice'),
    (['configs/nope.py', '--epsilons', '-1'], "config: no such file: 'configs/nope.py'"),
    ([FOCAL, '--epsilons', '-1'], 'the sweep config needs a Poly1FocalLoss or '
                                  "Poly1CrossEntropyLoss as its box classifier loss, found "
                                  "['FocalLoss']"),
    ([POLY, '--epsilons', '-1', '--gpus', '0'], '--gpus must be >= 1, got 0'),
    ([POLY, '--epsilons', '-1', '--gpus', '2'], '--gpus 2 needs --launcher pytorch or slurm'),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm'], '--launcher slurm needs --partition'),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p', '--gpus', '-1'],
     '--gpus must be >= 0, got -1'),
    ([POLY, '--epsilons', '-1', '--time', '4:00:00'], '--time needs --launcher slurm'),
    ([POLY, '--epsilons', '-1', '--wait'], '--wait needs --launcher slurm'),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p', '--time', '2h'],
     "--time takes a Slurm time limit (MINUTES, H:MM:SS, D-HH, D-HH:MM:SS), got '2h'"),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p', '--time', '4',
      '--signal-seconds', '300'], "--time '4' (240 s) must be longer than the 300 s"),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--max-parallel', '0'], "argument --max-parallel: expected an integer from 1 to 4000001, "
                              "got '0'"),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--max-parallel', '4294967297'], "argument --max-parallel: expected an integer from 1 to "
                                       "4000001, got '4294967297'"),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--cpus-per-task', '0'], "argument --cpus-per-task: expected an integer >= 1, got '0'"),
    ([POLY, '--epsilons', '-1', '--gpus', 'two'], "argument --gpus: expected an integer, got "
                                                  "'two'"),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--time', '1-00:00:00 '], "--time '1-00:00:00 ' has spaces around it, which sbatch "
                                "refuses; write --time '1-00:00:00'"),
    ([POLY, '--baseline', 'configs/trees/retinanet_tiny_fpn_focal_trees.py', '--epsilons',
      '-1'], '--baseline configs/trees/retinanet_tiny_fpn_focal_trees.py does not differ from '
     f'{POLY} in the loss alone: '),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--sbatch-args=--array=1-3'], "--sbatch-args '--array=1-3': --array=1-3 is set by the "
                                    'sweep itself'),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--sbatch-args=-Jmine'], "--sbatch-args '-Jmine': -Jmine is set by the sweep itself "
                               '(--job-name: the sweep finds its jobs in the queue by their name)'),
    ([POLY, '--epsilons', '-1', '--launcher', 'slurm', '--partition', 'p',
      '--signal-seconds', '1'], "argument --signal-seconds: expected an integer from 2 to "
                                "65535, got '1'"),
    ([POLY, '--epsilons', '-1', '--retry-failed'], '--retry-failed needs --launcher slurm'),
    ([POLY, '--epsilons', '-1', '--amp', '--cfg-options', 'optim_wrapper.loss_scale=512'],
     "--amp sets optim_wrapper.type and optim_wrapper.loss_scale; --cfg-options "
     "'optim_wrapper.loss_scale=512' sets it too: give one or the other"),
    ([POLY, '--epsilons', '-1', '--amp', '--launcher', 'slurm', '--partition', 'p', '--gpus',
      '0'], '--amp trains on GPUs, but --gpus 0 makes every run a CPU run'),
    ([POLY, '--epsilons', '-1', '--baseline', POLY],
     'two runs would share a work dir'),
    ([POLY], 'the following arguments are required: --epsilons'),
    ([POLY, '--epsilons'], 'nothing to run: give --epsilons values, a --baseline, or both'),
    ([POLY, '--epsilons', '-1', '--cfg-options', 'randomness.seed=4'],
     "--cfg-options 'randomness.seed=4': the sweep sets this for each run"),
    ([POLY, '--epsilons', '-1', '--cfg-options', 'oops'],
     "--cfg-options: expected KEY=VALUE, got 'oops'"),
    # what tools/train.py refuses, refused before any run's folder is cleared for it
    ([POLY, '--epsilons', '-1', '--cfg-options', 'optim_wrapper.optimizer.lr=nan'],
     'optim_wrapper.optimizer.lr=nan: expected a finite number'),
    ([POLY, '--epsilons', '-1', '--cfg-options', 'randomness=5'],
     'randomness must be a dict such as dict(seed=0), got 5'),
    ([POLY, '--epsilons', '-1', '--cfg-options', 'a=[1,2'], "--cfg-options: cannot parse 'a=[1,2'"),
    ([POLY, '--epsilons', '-1', '--cfg-options',
      'model.bbox_head.loss_cls=dict(type=Poly1FocalLoss,epsilon=0.5)'],
     '--cfg-options: cannot parse'),
])
def test_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    result = sweep([*args, '--work-dir-root', str(tmp_path), '--dry-run'])
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('sweep.py: error: '), result.stderr
    assert message in lines[0]
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('text, refused', [
    ('-Jmine', '-Jmine is set by the sweep itself (--job-name: '),
    ('-J mine', '-J is set by the sweep itself (--job-name: '),
    ('--job-n=x', '--job-n=x is set by the sweep itself (--job-name: '),
    ('--qos low -vJx', '-vJx is set by the sweep itself (--job-name: '),
    ('--dependency=afterok:1', '--dependency=afterok:1 is set by the sweep itself (--dependency: '
                               'the report job runs after the runs, whatever their end)'),
    ('-d afterok:1', '-d is set by the sweep itself (--dependency: '),
    ('--error=e.txt', "--error=e.txt is set by the sweep itself (--error: a run's errors must "
                      'reach the log the sweep reads)'),
    ('-e e.txt', '-e is set by the sweep itself (--error: '),
    ('--o=x', '--o=x is set by the sweep itself (--open-mode: '),  # ambiguous, and ours
    ('--out x', '--out is set by the sweep itself (--output: '),
    ('-oX', '-oX is set by the sweep itself (--output: '),
    ('-a 1-3', '-a is set by the sweep itself (--array: '),
    ('--wai', "--wai is set by the sweep itself (--wait: use the sweep's --wait)"),
    ('-vW', '-vW is set by the sweep itself (--wait: '),
    ('--chdir /x', '--chdir is set by the sweep itself (--chdir: the runs start in the folder '
                   'the sweep was started in)'),
    ('-D/x', '-D/x is set by the sweep itself (--chdir: '),
    ('--open-mode=truncate', '--open-mode=truncate is set by the sweep itself (--open-mode: '),
    ('-H', '-H is set by the sweep itself (--hold: '),
    ('--no-requeue', '--no-requeue is set by the sweep itself (--no-requeue: '),
    ('--ti=5', "--ti=5 is set by the sweep itself (--time: use the sweep's --time)"),
    ('--account det extra', "'extra' is not an sbatch option (sbatch would take what follows "
                            'as the job script)'),
    ('--', "'--' is not an sbatch option"),
])
def test_sbatch_args_options_the_sweep_sets_are_refused_by_any_spelling(text, refused):
    sys.path.insert(0, str(ROOT))
    from tools.lib.errors import UserError
    from tools.lib.sweep import slurm as sweep_slurm
    with pytest.raises(UserError) as error:
        sweep_slurm.parse_sbatch_args(text)
    assert str(error.value).startswith(f'--sbatch-args {text!r}: {refused}')


@pytest.mark.parametrize('text', [
    '--account=det --qos=low', '-A det -q low', '-Adet', '--acco det', '--comment -Jx',
    '--time-min=5', '--gpus=2', '--export=ALL,X=1', '-vQ', '-k', '--nice', '--exclusive',
    '--begin=now+1hour'])
def test_sbatch_args_other_options_pass_as_given(text):
    sys.path.insert(0, str(ROOT))
    from tools.lib.sweep import slurm as sweep_slurm
    assert sweep_slurm.parse_sbatch_args(text) == text.split()


def _key_of(tmp_path: Path, name: str) -> str:
    """The key the sweep gives a run: a first dry run leaves no marker, so make one
    with the planner itself."""
    sys.path.insert(0, str(ROOT))
    from tools.lib.sweep import plan as sweep_plan
    runs = sweep_plan.plan_runs(POLY, ['-1', '+0.5'], [0], None, tmp_path, [], [])
    return next(r.key for r in runs if r.name == name)


def test_states_from_the_work_dirs(tmp_path):
    """done is skipped, a started run with a checkpoint resumes, a trained one
    is only tested, a run of other settings is refused unless asked to retrain."""
    done = tmp_path / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    started = tmp_path / 'retinanet_tiny_fpn_poly1-eps+0.5_shapes'
    for path, name, state in ((done, done.name, 'tested'), (started, started.name, 'training')):
        path.mkdir()
        (path / '.sweep-run.json').write_text(json.dumps(
            {'key': _key_of(tmp_path, name), 'state': state}))
    for path in (done, started):  # each ended (or stopped) with a checkpoint
        (path / 'epoch_3.pth').write_bytes(b'PK')
        (path / 'last_checkpoint').write_text(str(path / 'epoch_3.pth'))
    args = [POLY, '--epsilons', '-1', '0.5', '--work-dir-root', str(tmp_path), '--dry-run']
    result = sweep(args)
    assert result.returncode == 0, result.stderr
    states = {row[0]: row[1] for row in plan_lines(result.stdout)}
    assert states == {done.name: 'done', started.name: 'resume'}
    assert result.stdout.count('tools/train.py') == 1
    assert '--resume' in next(line for line in result.stdout.splitlines() if 'train.py' in line)

    marker = json.loads((started / '.sweep-run.json').read_text())
    (started / '.sweep-run.json').write_text(json.dumps({**marker, 'state': 'trained'}))
    result = sweep(args)
    assert {r[0]: r[1] for r in plan_lines(result.stdout)}[started.name] == 'test'
    assert 'tools/train.py' not in result.stdout
    assert f'tools/test.py {POLY} {started}/epoch_3.pth' in result.stdout

    changed = sweep([*args, '--cfg-options', 'train_cfg.max_epochs=2'])
    assert changed.returncode == 2 and 'holds a run of other settings' in changed.stderr
    retrain = sweep([*args, '--cfg-options', 'train_cfg.max_epochs=2', '--retrain-changed'])
    assert retrain.returncode == 0, retrain.stderr
    assert {r[1] for r in plan_lines(retrain.stdout)} == {'new'}
    assert done.is_dir()  # a dry run deletes nothing


def test_a_damaged_finished_run_says_that_force_retrains_it(tmp_path):
    """A finished run whose checkpoint was deleted by hand is not silently reused."""
    run = tmp_path / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    run.mkdir()
    (run / '.sweep-run.json').write_text(json.dumps(
        {'key': _key_of(tmp_path, run.name), 'state': 'tested'}))
    args = [POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path), '--dry-run']
    result = sweep(args)
    assert result.returncode == 2
    assert result.stderr == (f'sweep.py: error: the finished run in {run} is damaged (no '
                             'last_checkpoint file); --force (FORCE=1 for tools/run_demo.sh) '
                             'retrains it\n')
    (run / 'last_checkpoint').write_text(str(run / 'epoch_24.pth'))
    result = sweep(args)
    assert f'({run}/epoch_24.pth is missing or empty)' in result.stderr
    (run / 'epoch_24.pth').write_bytes(b'PK')
    assert plan_lines(sweep(args).stdout)[0][1] == 'done'
    assert plan_lines(sweep([*args, '--force']).stdout)[0][1] == 'new'


def test_a_work_dir_the_sweep_did_not_write_is_kept(tmp_path):
    """A work dir without the sweep's marker (say, a tools/train.py run of the same
    config) is not deleted to make room: an error, unless --force."""
    run = tmp_path / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    run.mkdir()
    args = [POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path), '--dry-run']
    assert plan_lines(sweep(args).stdout)[0][1] == 'new'  # an empty dir is no run
    (run / 'epoch_12.pth').write_bytes(b'PK')
    for extra in ([], ['--retrain-changed']):
        refused = sweep([*args, *extra])
        assert refused.returncode == 2
        assert refused.stderr == (
            f'sweep.py: error: {run} holds files the sweep did not write (no .sweep-run.json), '
            'perhaps a run of tools/train.py; --force (FORCE=1 for tools/run_demo.sh) replaces '
            'it, or choose another --work-dir-root\n')
    forced = sweep([*args, '--force'])
    assert plan_lines(forced.stdout)[0][1] == 'new'
    assert (f'[sweep] a run would empty: the folder of {run.name} (it holds an earlier start '
            "of the run, a run of other settings, or files not the sweep's)") in forced.stdout
    assert (run / 'epoch_12.pth').is_file()


def test_a_work_dir_root_that_cannot_be_written_is_one_line(tmp_path):
    root = tmp_path / 'a_file'
    root.write_text('not a directory')
    result = sweep([POLY, '--epsilons', '-1', '--work-dir-root', str(root)])
    assert result.returncode == 2, result.stdout + result.stderr
    run = root / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    assert result.stderr == (f"sweep.py: error: cannot prepare the work dir '{run}': Not a "
                             f"directory: '{run}'\n")


def test_the_number_of_training_processes_is_part_of_a_runs_key(tmp_path):
    """A run trained on 1 GPU (total batch 4) is not 'done' for a sweep on 4 (batch 16);
    one process keeps the key a single-process run always had, whatever the launcher."""
    run = tmp_path / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    run.mkdir()
    (run / '.sweep-run.json').write_text(json.dumps(
        {'key': _key_of(tmp_path, run.name), 'state': 'tested'}))
    (run / 'epoch_3.pth').write_bytes(b'PK')
    (run / 'last_checkpoint').write_text(str(run / 'epoch_3.pth'))
    args = [POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path), '--dry-run']
    for launcher in ([], ['--launcher', 'pytorch', '--gpus', '1'],
                     ['--launcher', 'slurm', '--partition', 'p', '--gpus', '0']):
        assert plan_lines(sweep([*args, *launcher]).stdout)[0][1] == 'done', launcher
    changed = sweep([*args, '--launcher', 'pytorch', '--gpus', '4'])
    assert changed.returncode == 2 and 'holds a run of other settings' in changed.stderr


def test_key_files_are_part_of_a_runs_key(tmp_path):
    """A finished run whose key file changed is a run of other settings; a dry run
    before the file is made plans (and says so), a real run refuses to start."""
    key_file = tmp_path / 'meta.json'
    key_file.write_text('{"images": 8}')
    runs = tmp_path / 'runs'
    args = [POLY, '--epsilons', '-1', '--work-dir-root', str(runs), '--key-files', str(key_file)]
    sys.path.insert(0, str(ROOT))
    from tools.lib.sweep import plan as sweep_plan
    key = sweep_plan.plan_runs(POLY, ['-1'], [0], None, runs, [], [str(key_file)])[0].key
    assert key != _key_of(runs, 'retinanet_tiny_fpn_poly1-eps-1_shapes')  # the file counts
    run = runs / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    run.mkdir(parents=True)
    (run / '.sweep-run.json').write_text(json.dumps({'key': key, 'state': 'tested'}))
    (run / 'epoch_3.pth').write_bytes(b'PK')
    (run / 'last_checkpoint').write_text(str(run / 'epoch_3.pth'))
    assert plan_lines(sweep([*args, '--dry-run']).stdout)[0][1] == 'done'

    key_file.write_text('{"images": 9}')
    changed = sweep([*args, '--dry-run'])
    assert changed.returncode == 2 and 'holds a run of other settings' in changed.stderr
    assert plan_lines(sweep([*args, '--dry-run', '--retrain-changed']).stdout)[0][1] == 'new'

    key_file.unlink()
    planned = sweep([*args, '--dry-run', '--retrain-changed'])
    assert planned.returncode == 0, planned.stderr
    assert f'--key-files not made yet: {key_file};' in planned.stdout
    assert plan_lines(planned.stdout)[0][1] == 'new'
    refused = sweep(args)
    assert refused.returncode == 2
    assert refused.stderr == (f"sweep.py: error: --key-files: cannot read '{key_file}': "
                              'No such file or directory\n')
    assert (run / 'epoch_3.pth').is_file()  # refused before anything was touched


@pytest.mark.slow
def test_a_tiny_sweep_end_to_end_and_its_rerun(tmp_path):
    """Baseline + one epsilon, one seed, one short epoch each: trains, tests,
    reports; a second call skips both runs and reports again."""
    workspace = make_workspace(tmp_path)
    options = [o for o in FAST if not o.startswith('randomness.seed=')]
    args = [str(ROOT / POLY), '--baseline', str(ROOT / FOCAL), '--epsilons', '-1', '--seeds',
            '3', '--work-dir-root', 'sweep', '--cfg-options', *options]
    result = sweep_subprocess(args, workspace)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = workspace / 'sweep'
    for name in ('retinanet_tiny_fpn_focal_shapes_seed3',
                 'retinanet_tiny_fpn_poly1-eps-1_shapes_seed3'):
        marker = json.loads((root / name / '.sweep-run.json').read_text())
        assert marker['state'] == 'tested'
        assert re.search(rf'^\[sweep\] {name}: trained in \d+ s, tested in \d+ s$',
                         result.stdout, re.M)
    table = (root / 'sweep.md').read_text()
    assert '| retinanet_tiny_fpn_focal_shapes_seed3 (baseline) | focal |' in table
    assert 'poly-1 eps=-1' in table
    # Real run folders of one recipe: one table, naming the dataset.
    assert 'Runs of another recipe' not in table
    assert ('\nDataset: train data/polyloss_shapes/annotations/instances_train.json, test '
            'data/polyloss_shapes/annotations/instances_val.json\n') in table
    assert (root / 'sweep.png').stat().st_size > 10_000
    again = sweep_subprocess(args, workspace)
    assert again.returncode == 0, again.stderr
    assert {r[1] for r in plan_lines(again.stdout)} == {'done'}
    assert 'tools/train.py' not in again.stdout and 'sweep.md' in again.stdout

    # Killed while training: the run resumes from its last checkpoint, the other is kept.
    poly = root / 'retinanet_tiny_fpn_poly1-eps-1_shapes_seed3'
    marker = json.loads((poly / '.sweep-run.json').read_text())
    (poly / '.sweep-run.json').write_text(json.dumps({**marker, 'state': 'training'}))
    checkpoint = (poly / 'last_checkpoint').read_text().strip()
    resumed = sweep_subprocess(args, workspace)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert {r[0]: r[1] for r in plan_lines(resumed.stdout)} == {
        'retinanet_tiny_fpn_focal_shapes_seed3': 'done', poly.name: 'resume'}
    train = [line for line in resumed.stdout.splitlines() if 'tools/train.py' in line]
    assert len(train) == 1 and '--resume' in train[0] and poly.name in train[0]
    assert json.loads((poly / '.sweep-run.json').read_text())['state'] == 'tested'
    assert Path(checkpoint).is_file()  # resumed in place, not cleared

    # A tool that fails stops the sweep with one line; the run stays resumable.
    (poly / '.sweep-run.json').write_text(json.dumps({**marker, 'state': 'training'}))
    Path(checkpoint).write_bytes(b'not a checkpoint')  # the resume cannot load it
    failed = sweep_subprocess(args, workspace)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == (
        'sweep.py: error: train.py exited with status 2 (its output is above); rerun the '
        'sweep to resume it (if it fails the same way again, --force retrains it from '
        'scratch)')
    assert json.loads((poly / '.sweep-run.json').read_text())['state'] == 'training'
    # An empty one is refused before training, naming the file and --force.
    Path(checkpoint).write_bytes(b'')
    refused = sweep_subprocess(args, workspace)
    assert refused.returncode == 2 and 'tools/train.py' not in refused.stdout
    assert f'is damaged ({checkpoint} is missing or empty); --force' in refused.stderr


def test_a_broken_config_is_one_line_naming_it(tmp_path):
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    result = sweep([str(broken), '--epsilons', '-1', '--work-dir-root', str(tmp_path),
                    '--dry-run'])
    assert result.returncode == 2
    assert result.stderr == (f"sweep.py: error: config {broken}: syntax error at line 1: "
                             "'(' was never closed: model = dict(\n")


def test_a_training_that_leaves_no_checkpoint_is_one_line(tmp_path, monkeypatch):
    """A training that exits 0 without writing last_checkpoint (its checkpoint hook
    switched off, say): one line naming the run, before any test is started."""
    from tools.lib.sweep import run
    started = []
    monkeypatch.setattr(run, 'run_child', lambda command, *_: started.append(command) or 0)
    result = sweep([POLY, '--epsilons', '-1', '--work-dir-root', str(tmp_path)])
    name = 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f'sweep.py: error: {name}: training left no last_checkpoint in {tmp_path / name}')
    assert [Path(command[1]).name for command in started] == ['train.py']


def test_a_training_that_fails_before_its_first_checkpoint_says_rerun_to_train(tmp_path):
    """Not 'rerun the sweep to resume it': there is nothing to resume."""
    workspace = make_workspace(tmp_path, num_train=2, num_val=1)
    result = sweep_subprocess([str(ROOT / POLY), '--epsilons', '-1', '--cfg-options',
                               'train_cfg.max_epochs=0', '--work-dir-root', str(tmp_path / 's')],
                              workspace)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        'sweep.py: error: train.py exited with status 2 (its output is above); rerun the '
        'sweep to train it (it saved no checkpoint)')


def test_a_test_that_fails_on_its_checkpoint_says_force_retrains_it(tmp_path):
    """A trained run whose checkpoint torch cannot read: test.py's line, then the way
    out if a rerun fails the same way."""
    workspace = make_workspace(tmp_path, num_train=2, num_val=1)
    run = tmp_path / 's' / 'retinanet_tiny_fpn_poly1-eps-1_shapes'
    run.mkdir(parents=True)
    (run / '.sweep-run.json').write_text(json.dumps(
        {'key': _key_of(tmp_path, run.name), 'state': 'trained'}))
    (run / 'epoch_1.pth').write_bytes(b'not a checkpoint')
    (run / 'last_checkpoint').write_text(str(run / 'epoch_1.pth'))
    result = sweep_subprocess([str(ROOT / POLY), '--epsilons', '-1', '--work-dir-root',
                               str(tmp_path / 's')], workspace)
    assert result.returncode == 2
    assert f'test.py: error: checkpoint {run}/epoch_1.pth cannot be read' in result.stderr
    assert result.stderr.splitlines()[-1] == (
        'sweep.py: error: test.py exited with status 2 (its output is above); rerun the '
        'sweep to test it again (if it fails the same way again, --force retrains it from '
        'scratch)')


def test_a_baseline_of_another_recipe_is_refused_naming_the_key(tmp_path):
    """Before: trained, paired and averaged as if comparable (trees Poly-1 against a shapes
    focal config). The run's work_dir may differ, and the loss; nothing else."""
    longer = tmp_path / 'focal_longer.py'
    longer.write_text(f"_base_ = '{ROOT / FOCAL}'\ntrain_cfg = dict(max_epochs=48)\n")
    result = sweep([POLY, '--baseline', str(longer), '--epsilons', '-1', '--work-dir-root',
                    str(tmp_path / 'root'), '--dry-run'])
    assert (result.returncode, result.stderr) == (2, (
        f'sweep.py: error: --baseline {longer} does not differ from {POLY} in the loss alone: '
        'train_cfg.max_epochs: 24 in the sweep config, 48 in the baseline; a sweep compares '
        'runs whose configs differ only in model...loss_cls (and work_dir, randomness.seed): '
        'give a baseline of the same recipe, or set the key with --cfg-options for both\n'))
    assert not (tmp_path / 'root').exists()
    elsewhere = tmp_path / 'focal_elsewhere.py'
    elsewhere.write_text(f"_base_ = '{ROOT / FOCAL}'\nwork_dir = 'somewhere/else'\n")
    accepted = sweep([POLY, '--baseline', str(elsewhere), '--epsilons', '-1',
                      '--work-dir-root', str(tmp_path / 'root'), '--dry-run'])
    assert accepted.returncode == 0, accepted.stderr
