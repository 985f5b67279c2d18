"""The sweep report end to end: work dirs in, tables and plot out
(tools.lib.sweep.report.build_report, tools/sweep_report.py)."""
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from PIL import Image

from tools.lib.sweep.report import SweepReportError, build_report, load_run

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / 'tools' / 'sweep_report.py'


def _metrics(ap: float, ar: Optional[float] = None) -> Dict[str, float]:
    out = {
        'coco/bbox_mAP': ap,
        'coco/bbox_mAP_50': ap + 0.2,
        'coco/bbox_mAP_75': ap - 0.05,
        'coco/bbox_mAP_s': ap - 0.1,
        'coco/bbox_mAP_m': ap,
        'coco/bbox_mAP_l': -1.0,  # no large objects
    }
    if ar is not None:
        out['coco/bbox_AR@100'] = ar
    return out


def make_run(root: Path, name: str, loss: str, ap: float,
             ar: Optional[float] = None, stale_ap: Optional[float] = None,
             seed: Optional[int] = None, extra_config: str = '', epochs: int = 12) -> Path:
    """A finished run laid out as mmengine writes it: a training run (its
    validations are never reported: ``stale_ap``), ``epoch_<epochs>.pth`` named in
    ``last_checkpoint``, and a tools/test.py run of that checkpoint with ``ap``."""
    work = root / name
    train = work / '20260101_120000'
    (train / 'vis_data').mkdir(parents=True)
    lines = [dict(loss=1.0, step=10)]
    if stale_ap is not None:
        lines.append(dict(_metrics(stale_ap, ar), step=1))
    (train / 'vis_data' / 'scalars.json').write_text(
        '\n'.join(json.dumps(line) for line in lines) + '\n')
    checkpoint = work / f'epoch_{epochs}.pth'
    checkpoint.write_bytes(b'PK')
    (work / 'last_checkpoint').write_text(str(checkpoint))
    test = work / '20260102_090000'
    (test / 'vis_data').mkdir(parents=True)
    (test / f'{test.name}.json').write_text(json.dumps(_metrics(ap, ar)))
    set_config(work, f'model = dict(type="RetinaNet", bbox_head=dict(loss_cls={loss}))\n'
               + ('' if seed is None else f'randomness = dict(seed={seed})\n')
               + f'train_cfg = dict(max_epochs={epochs})\n' + extra_config)
    return work


def set_config(work: Path, text: str) -> None:
    """The config a run dumped: the work dir's (training) and its final test's
    (with the checkpoint it tested as load_from)."""
    (work / f'{work.name}.py').write_text(text)
    checkpoint = (work / 'last_checkpoint').read_text()
    (work / '20260102_090000' / 'vis_data' / 'config.py').write_text(
        text + f'load_from = {checkpoint!r}\n')


FOCAL = 'dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25)'


def poly(eps: float, weighted: bool = True) -> str:
    return (f'dict(type="Poly1FocalLoss", epsilon={eps}, '
            f'alpha_weighted_poly={weighted})')


@pytest.fixture
def sweep(tmp_path) -> Dict[str, Path]:
    return {
        'p1': make_run(tmp_path, 'eps+1', poly(1.0), 0.340, 0.50),
        'm1': make_run(tmp_path, 'eps-1', poly(-1.0), 0.372, 0.53,
                       stale_ap=0.1),
        'base': make_run(tmp_path, 'focal', FOCAL, 0.365, 0.52),
        'noalpha': make_run(tmp_path, 'eps-1-noalpha', poly(-1.0, False),
                            0.300, 0.45),
        'm05': make_run(tmp_path, 'eps-0.5', poly(-0.5), 0.368, None),
    }


def test_table_baseline_first_then_by_epsilon_with_deltas(sweep, tmp_path):
    table = build_report([str(p) for p in sweep.values()],
                         out_md=str(tmp_path / 'sweep.md'))
    rows, after = table.split('\n\n', 1)
    rows = rows.splitlines()
    assert after == "Dataset: not named in the runs' configs"  # made-up configs name none
    assert rows[0].startswith('| run | loss | mAP | AP50 | AP75 | AP_s')
    assert 'AR@100' in rows[0] and 'AR_s' not in rows[0]
    names = [row.split('|')[1].strip() for row in rows[2:]]
    assert names == [
        'focal (baseline)', 'eps-1', 'eps-1-noalpha', 'eps-0.5', 'eps+1'
    ]
    base, m1 = rows[2].split('|'), rows[3].split('|')
    # Columns: '', run, loss, mAP, AP50, AP75, AP_s, AP_m, AP_l, AR@100, ''
    # (AR_s/m/l are logged by no run here, so the table leaves them out).
    assert base[3].strip() == '36.5' and base[8].strip() == 'n/a'  # AP_l -1
    # The newest evaluation (step 2), not the stale one, with its delta.
    assert m1[3].strip() == '37.2 (+0.7)'
    assert m1[4].strip() == '57.2 (+0.7)'
    assert m1[9].strip() == '53.0 (+1.0)'
    assert 'no alpha_t' in rows[4]
    assert rows[5].split('|')[9].strip() == 'n/a'  # AR not logged there
    assert (tmp_path / 'sweep.md').read_text().strip() == table


def test_the_final_checkpoints_test_is_the_row(tmp_path):
    run = make_run(tmp_path, 'r', FOCAL, 0.31, stale_ap=0.5)
    result = load_run(str(run))
    assert result.metrics['bbox_mAP'] == 0.31 and not result.unfinished
    assert result.source.endswith('20260102_090000.json')
    assert (result.loss_type, result.epsilon) == ('FocalLoss', 0.0)


def test_explicit_baseline(sweep):
    table = build_report([str(sweep['base']), str(sweep['m1'])],
                         baseline='eps-1')
    rows = table.splitlines()
    assert rows[2].startswith('| eps-1 (baseline)')
    assert '36.5 (-0.7)' in rows[3]


def test_png_plot(sweep, tmp_path, monkeypatch):
    """The plot draws AP and AR@100 per epsilon, alpha-weighted runs as the line,
    the no-alpha run apart, the baseline as a horizontal line."""
    from matplotlib.axes import Axes
    drawn = []
    errorbar, axhline = Axes.errorbar, Axes.axhline

    def record_errorbar(ax, x, y, *args, **kwargs):
        drawn.append(('errorbar', kwargs.get('label'), list(x), [round(v, 1) for v in y]))
        return errorbar(ax, x, y, *args, **kwargs)

    def record_axhline(ax, y=0, *args, **kwargs):
        drawn.append(('hline', kwargs.get('label'), [], [round(y, 1)]))
        return axhline(ax, y, *args, **kwargs)
    monkeypatch.setattr(Axes, 'errorbar', record_errorbar)
    monkeypatch.setattr(Axes, 'axhline', record_axhline)
    png = tmp_path / 'plots' / 'sweep.png'
    build_report([str(p) for p in sweep.values()], out_png=str(png))
    line_ap, other_ap, base_ap, line_ar, other_ar, base_ar = drawn
    assert line_ap[2:] == ([-1.0, -0.5, 0.0, 1.0], [37.2, 36.8, 36.5, 34.0])
    assert other_ap[2:] == ([-1.0], [30.0])
    assert base_ap[0] == 'hline' and base_ap[3] == [36.5]
    assert line_ar[2:] == ([-1.0, 0.0, 1.0], [53.0, 52.0, 50.0])  # eps -0.5 logged no AR
    assert other_ar[3] == [45.0] and base_ar[3] == [52.0]
    with Image.open(png) as im:
        assert im.format == 'PNG'
        assert im.size[0] > 600 and im.size[1] > 300
        # Not a blank canvas: lines and markers were drawn.
        assert len(im.convert('RGB').getcolors(maxcolors=100000)) > 50


def test_missing_work_dir_is_named(tmp_path):
    with pytest.raises(SweepReportError, match='nowhere'):
        build_report([str(tmp_path / 'nowhere')])


def test_no_finished_run_is_an_error_naming_each(tmp_path):
    work = tmp_path / 'untrained'
    (work / '20260101_120000' / 'vis_data').mkdir(parents=True)
    (work / '20260101_120000' / 'vis_data' / 'scalars.json').write_text(
        json.dumps(dict(loss=1.0, step=1)) + '\n')
    with pytest.raises(SweepReportError) as error:
        build_report([str(work)])
    assert str(error.value) == ('no run has a test of the checkpoint its training ended with '
                                'yet: untrained: no checkpoint yet (no last_checkpoint file)')


def test_unknown_baseline_is_named(sweep):
    with pytest.raises(SweepReportError, match="--baseline 'nope'"):
        build_report([str(sweep['base'])], baseline='nope')


def test_command_line(sweep, tmp_path):
    png = tmp_path / 'cli.png'
    ok = subprocess.run(
        [sys.executable, str(TOOL), str(sweep['m1']), str(sweep['base']),
         '--out-png', str(png)], capture_output=True, text=True, check=True)
    assert ok.stdout.splitlines()[2].startswith('| focal (baseline)')
    assert png.is_file()
    bad = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / 'missing')],
        capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("sweep_report.py: error: work_dir '")
    assert 'missing' in bad.stderr and bad.stderr.count('\n') == 1  # one line, no usage
    blocked = tmp_path / 'a_file'
    blocked.write_text('')
    unwritable = subprocess.run(
        [sys.executable, str(TOOL), str(sweep['base']), '--out-png', str(blocked / 'x.png')],
        capture_output=True, text=True)
    assert unwritable.returncode == 2 and 'Traceback' not in unwritable.stderr
    assert unwritable.stderr == (f"sweep_report.py: error: --out-png '{blocked / 'x.png'}' "
                                 f"cannot be written: [Errno 17] File exists: '{blocked}'\n")
    # checked before any run is read: an unknown format was a traceback from matplotlib,
    # a folder was written as '<folder>.png'
    for flag, path, message in (
            ('--out-png', tmp_path / 'p.txt', f"--out-png '{tmp_path / 'p.txt'}': expected a "
                                              'file name ending in a format matplotlib writes '
                                              '(.png, .pdf, .svg, ...)'),
            ('--out-png', tmp_path, f"--out-png '{tmp_path}': expected a file name ending in "
                                    'a format matplotlib writes (.png, .pdf, .svg, ...)'),
            ('--out-md', tmp_path, f"--out-md '{tmp_path}' cannot be written: '{tmp_path}' is "
                                   'a directory')):
        refused = subprocess.run([sys.executable, str(TOOL), str(tmp_path / 'missing'), flag,
                                  str(path)], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr == f'sweep_report.py: error: {message}\n'


def test_two_stage_runs_read_the_roi_classifier_not_the_rpn(tmp_path):
    """Mask R-CNN: the RPN's CrossEntropyLoss comes first in the config; the
    report must label runs by the RoI box classifier's loss."""
    rpn = 'dict(type="CrossEntropyLoss", use_sigmoid=True)'
    runs = []
    for name, roi_loss, ap in (
            ('poly', 'dict(type="Poly1CrossEntropyLoss", epsilon=-1.0)', 0.385),
            ('ce', 'dict(type="CrossEntropyLoss", use_sigmoid=False)', 0.382)):
        work = make_run(tmp_path, name, FOCAL, ap)
        set_config(work, f'model = dict(type="MaskRCNN", rpn_head=dict(loss_cls={rpn}), '
                   f'roi_head=dict(bbox_head=dict(loss_cls={roi_loss})))\n'
                   'train_cfg = dict(max_epochs=12)\n')
        runs.append(str(work))
    rows = build_report(runs).splitlines()
    assert rows[2].split('|')[1:4] == [' ce (baseline) ', ' cross-entropy ', ' 38.2 ']
    assert rows[3].split('|')[1:4] == [' poly ', ' poly-1 CE eps=-1 ', ' 38.5 (+0.3) ']


def _seed_rows(table: str) -> Dict[str, list]:
    part = table.split('Across seeds')[1]
    rows = [line.split('|')[1:-1] for line in part.splitlines() if line.startswith('| ')]
    return {row[0].strip(): [cell.strip() for cell in row] for row in rows[1:]}


def test_seeds_are_summarised_with_paired_differences(tmp_path):
    runs = [make_run(tmp_path, 'focal_s0', FOCAL, 0.365, 0.50, seed=0),
            make_run(tmp_path, 'focal_s1', FOCAL, 0.375, 0.52, seed=1),
            make_run(tmp_path, 'poly_s0', poly(-1.0), 0.372, 0.53, seed=0),
            make_run(tmp_path, 'poly_s1', poly(-1.0), 0.390, 0.53, seed=1),
            make_run(tmp_path, 'plus1', poly(1.0), 0.340, seed=0)]
    table = build_report([str(r) for r in runs], out_png=str(tmp_path / 'p.png'))
    # The per-run table still lists every run.
    assert len([line for line in table.split('Across seeds')[0].splitlines()
                if line.startswith('| ') and not line.startswith('| run')]) == 5
    rows = _seed_rows(table)
    # Columns: loss, runs, mAP, Δ mAP, AP50, Δ AP50, AR@100, Δ AR@100
    focal = rows['focal (baseline)']
    assert focal[1] == '2 (0, 1)' and focal[2] == '37.0 ± 0.7' and focal[3] == ''
    eps_m1 = rows['poly-1 eps=-1']
    assert eps_m1[2] == '38.1 ± 1.3'  # 37.2 and 39.0
    assert eps_m1[3] == '+1.1 ± 0.6 (2 paired)'  # +0.7 (seed 0), +1.5 (seed 1)
    assert eps_m1[6] == '53.0 ± 0.0' and eps_m1[7] == '+2.0 ± 1.4 (2 paired)'
    plus1 = rows['poly-1 eps=+1']
    assert plus1[1] == '1 (0)' and plus1[2] == '34.0' and plus1[3] == '-2.5 (1 paired)'
    assert plus1[6] == 'n/a' and plus1[7] == 'n/a'  # AR not logged for that run
    assert Image.open(tmp_path / 'p.png').size[0] > 0


def test_unpaired_seeds_compare_means(tmp_path):
    runs = [make_run(tmp_path, 'f0', FOCAL, 0.30, seed=0),
            make_run(tmp_path, 'f1', FOCAL, 0.32, seed=1),
            make_run(tmp_path, 'p5', poly(-1.0), 0.35, seed=5)]
    rows = _seed_rows(build_report([str(r) for r in runs]))
    assert rows['poly-1 eps=-1'][3] == '+4.0 (means)'  # 35.0 - 31.0


def test_no_seed_table_when_every_setting_ran_once(sweep):
    assert 'Across seeds' not in build_report([str(p) for p in sweep.values()])


def test_runs_repeating_a_seed_are_not_averaged(tmp_path):
    """Same loss, same seed: the runs differ in something else (a schedule), so
    the report must not present them as seed replicates."""
    runs = [make_run(tmp_path, 'f0', FOCAL, 0.30, seed=0),
            make_run(tmp_path, 'f1', FOCAL, 0.32, seed=1),
            make_run(tmp_path, 'p_24e', poly(-1.0), 0.25, seed=0),
            make_run(tmp_path, 'p_48e', poly(-1.0), 0.35, seed=0)]
    table = build_report([str(r) for r in runs])
    assert 'Not averaged: poly-1 eps=-1 has runs (p_24e, p_48e)' in table
    rows = _seed_rows(table)
    assert list(rows) == ['focal (baseline)'] and rows['focal (baseline)'][2] == '31.0 ± 1.4'

    base_mixed = build_report([str(r) for r in runs[2:]] + [str(runs[0])],
                              baseline='p_24e')
    assert 'Not averaged: poly-1 eps=-1' in base_mixed
    assert '| loss | runs (seeds)' not in base_mixed  # no baseline to average against


def test_runs_differing_in_loss_arguments_or_schedule_are_not_averaged(tmp_path):
    """Only runs that differ in nothing but the seed are averaged: other loss
    arguments (PolyN's epsilons, gamma) and the schedule keep settings apart."""
    polyn = 'dict(type="PolyNFocalLoss", epsilons={})'
    runs = [make_run(tmp_path, 'f0', FOCAL, 0.30, seed=0),
            make_run(tmp_path, 'f1', FOCAL, 0.32, seed=1),
            make_run(tmp_path, 'n_plus', polyn.format((1.0,)), 0.40, seed=0),
            make_run(tmp_path, 'n_minus', polyn.format((-1.0,)), 0.30, seed=1),
            make_run(tmp_path, 'g1', FOCAL.replace('gamma=2.0', 'gamma=1.0'), 0.20, seed=2),
            make_run(tmp_path, 'f48', FOCAL, 0.50, seed=2, epochs=48),
            # gamma=2 is gamma=2.0: a seed of the baseline's setting.
            make_run(tmp_path, 'f2', FOCAL.replace('gamma=2.0', 'gamma=2'), 0.31, seed=2)]
    table = build_report([str(r) for r in runs])
    rows = _seed_rows(table)
    assert rows['focal (baseline)'][1] == '3 (0, 1, 2)'
    assert rows['poly-N eps=(1.0,)'][1] == '1 (0)'
    assert rows['poly-N eps=(-1.0,)'][1] == '1 (1)'
    assert rows['focal (gamma=1.0)'][1] == '1 (2)'
    # Another schedule is another recipe: a table of its own, not a row of this one
    # (before issue 29: a 'focal (schedule=48)' row among these).
    assert 'focal (schedule=48)' not in table
    assert ('Runs of another recipe, compared only among themselves (they differ from f0 in '
            'train_cfg.max_epochs: 12 in f0, 48 in f48):') in table


def test_loss_settings_come_from_the_run_that_logged_the_metrics(tmp_path):
    """A later run that logged no metrics (interrupted) overwrites the top-level
    config; the report still reads the loss of the test whose metrics it shows."""
    work = make_run(tmp_path, 'r', poly(-1.0), 0.30, seed=3)
    later = work / '20260103_080000' / 'vis_data'
    later.mkdir(parents=True)
    (later / 'scalars.json').write_text(json.dumps(dict(loss=2.0, step=1)) + '\n')
    newer = (f'model = dict(bbox_head=dict(loss_cls={poly(1.0)}))\nrandomness = dict(seed=3)\n'
             'train_cfg = dict(max_epochs=12)\n')
    (later / 'config.py').write_text(newer)
    (work / 'r.py').write_text(newer)
    result = load_run(str(work))
    assert result.metrics['bbox_mAP'] == 0.30
    assert result.epsilon == -1.0


def test_seed_comes_from_the_training_run_not_its_test(tmp_path):
    """tools/test.py without --cfg-options randomness.seed dumps seed 0."""
    work = make_run(tmp_path, 'r', FOCAL, 0.30, seed=2)
    test_config = work / '20260102_090000' / 'vis_data' / 'config.py'
    test_config.write_text(test_config.read_text().replace('seed=2', 'seed=0'))
    result = load_run(str(work))
    assert result.metrics['bbox_mAP'] == 0.30 and result.seed == 2


def test_baseline_given_as_a_path(sweep):
    """As tab completion writes it: trailing slash, or an absolute path."""
    for given in (str(sweep['m1']) + '/', str(sweep['m1'].resolve())):
        table = build_report([str(sweep['base']), str(sweep['m1'])], baseline=given)
        assert table.splitlines()[2].startswith('| eps-1 (baseline)')


def _dataset_config(root: str) -> str:
    return (f'train_dataloader = dict(dataset=dict(type="CocoDataset", data_root="{root}", '
            'ann_file="annotations/instances_train.json"))\n'
            f'test_dataloader = dict(dataset=dict(type="CocoDataset", data_root="{root}", '
            'ann_file="annotations/instances_val.json"))\n')


def test_runs_of_two_datasets_are_neither_paired_nor_averaged(tmp_path):
    """Trees Poly-1 runs against a shapes focal baseline: before, one table, per-seed pairs
    and means across both datasets, and no table named a dataset."""
    shapes, trees = _dataset_config('data/polyloss_shapes/'), _dataset_config('data/trees/')
    runs = [make_run(tmp_path, 'focal_s0', FOCAL, 0.60, seed=0, extra_config=shapes),
            make_run(tmp_path, 'focal_s1', FOCAL, 0.62, seed=1, extra_config=shapes),
            make_run(tmp_path, 'poly_s0', poly(-1.0), 0.12, seed=0, extra_config=trees),
            make_run(tmp_path, 'poly_s1', poly(-1.0), 0.14, seed=1, extra_config=trees)]
    table = build_report([str(r) for r in runs])
    first, second = table.split('Runs of another recipe')
    assert [line.split('|')[1].strip() for line in first.splitlines()[2:4]] == [
        'focal_s0 (baseline)', 'focal_s1']
    assert ('Dataset: train data/polyloss_shapes/annotations/instances_train.json, test '
            'data/polyloss_shapes/annotations/instances_val.json') in first
    assert second.startswith(
        ', compared only among themselves (they differ from focal_s0 in '
        "train_dataloader.dataset.data_root: 'data/polyloss_shapes/' in focal_s0, "
        "'data/trees/' in poly_s0):")
    assert 'Dataset: train data/trees/annotations/instances_train.json' in second
    # Each recipe against its own baseline: no delta across datasets.
    assert '| poly_s0 (baseline) | poly-1 eps=-1 | 12.0 |' in second
    assert "Across seeds, the runs of poly_s0's recipe" in second
    assert _seed_rows(table)['focal (baseline)'][1] == '2 (0, 1)'
    # A named baseline's recipe comes first.
    named = build_report([str(r) for r in runs], baseline='poly_s1')
    assert named.splitlines()[2].startswith('| poly_s1 (baseline) | poly-1 eps=-1 | 14.0 |')
    assert '(they differ from poly_s1 in train_dataloader.dataset.data_root' in named


def test_files_among_the_work_dirs_are_skipped_with_a_note(sweep, tmp_path):
    """``sweep_report.py ROOT/*`` after a sweep: its sweep.md and sweep.png are no runs
    (before: 'work_dir ... does not exist or is not a directory')."""
    (tmp_path / 'sweep.md').write_text('| old |\n')
    (tmp_path / 'slurm' / 'logs').mkdir(parents=True)
    everything = sorted(str(p) for p in tmp_path.iterdir())
    table = build_report(everything)
    assert table.endswith(f'Skipped, not run folders: {tmp_path}/slurm (no last_checkpoint, '
                          f'config or log folder in it); {tmp_path}/sweep.md (a file).')
    assert len([line for line in table.splitlines() if line.startswith('| ')]) == 1 + 5
    with pytest.raises(SweepReportError) as error:
        build_report([str(tmp_path / 'sweep.md')])
    assert str(error.value) == f'no run folder among the work dirs: {tmp_path}/sweep.md: a file'


def _training_part(work: Path, stamp: str, config: str) -> None:
    """A logged part of a training (its loss, its dumped config) in ``work``."""
    logs = work / stamp / 'vis_data'
    logs.mkdir(parents=True, exist_ok=True)  # (make_run's part has no config)
    (logs / 'scalars.json').write_text(json.dumps(dict(loss=1.0, step=1)) + '\n')
    (logs / 'config.py').write_text(config)


def test_runs_started_from_other_weights_are_separated_a_resume_is_not(tmp_path):
    """load_from was never compared: a run fine-tuned from other weights sat in one table
    with the others. A resumed part (resume=True; load_from: the run's own checkpoint, or
    None) does not count; the part that started the training does."""
    base = make_run(tmp_path, 'focal', FOCAL, 0.60)
    other = make_run(tmp_path, 'poly', poly(-1.0), 0.20)
    model = (f'model = dict(type="RetinaNet", bbox_head=dict(loss_cls={poly(-1.0)}))\n'
             'train_cfg = dict(max_epochs=12)\n')
    _training_part(other, '20260101_100000', model + 'load_from = None\n')  # retrained since
    _training_part(other, '20260101_120000', model + "load_from = 'coco_retinanet.pth'\n")
    _training_part(other, '20260101_150000', model + "load_from = None\nresume = True\n")
    assert ("they differ from focal in load_from: None in focal, 'coco_retinanet.pth' in "
            'poly)') in build_report([str(base), str(other)])
    # retrained from scratch after that (no resume): the newest start counts
    _training_part(other, '20260101_160000', model + 'load_from = None\n')
    assert 'another recipe' not in build_report([str(base), str(other)])


def test_a_test_with_a_config_of_another_loss_than_its_training_is_not_reported(tmp_path):
    """tools/test.py given another epsilon's config tests the same weights, and the row was
    labelled by the test's loss (a run trained at -1 shown as eps=+0.5). Now it is left out,
    saying why; a training begun after the test (interrupted) is no such case."""
    work = make_run(tmp_path, 'r', poly(0.5), 0.30)  # its test's config: eps +0.5
    trained_as = (f'model = dict(type="RetinaNet", bbox_head=dict(loss_cls={poly(-1.0)}))\n'
                  'train_cfg = dict(max_epochs=12)\n')
    _training_part(work, '20260101_120000', trained_as)  # trained at -1, before the test
    result = load_run(str(work))
    assert result.unfinished == (
        "its final test (20260102_090000) ran a config of another loss than its training "
        "(model.bbox_head.loss_cls.epsilon: 0.5 in the test, -1.0 in the training); test it "
        'with the config it was trained with')
    (work / '20260101_120000' / 'vis_data' / 'config.py').write_text(
        trained_as.replace(poly(-1.0), poly(0.5)))
    assert not load_run(str(work)).unfinished and load_run(str(work)).epsilon == 0.5


def test_runs_tested_with_other_test_settings_are_separated(tmp_path):
    """The recipe comparison read the training configs only: a final test with another
    score threshold (or --tta, another test pipeline) was compared as if alike."""
    base = make_run(tmp_path, 'focal', FOCAL, 0.60)
    other = make_run(tmp_path, 'poly', poly(-1.0), 0.20)
    for work, score_thr in ((base, 0.05), (other, 0.9)):
        test_config = work / '20260102_090000' / 'vis_data' / 'config.py'
        test_config.write_text(test_config.read_text().replace(
            'type="RetinaNet",', f'type="RetinaNet", test_cfg=dict(score_thr={score_thr}),'))
    assert ("they differ from focal in the final test's model.test_cfg.score_thr: 0.05 in "
            'focal, 0.9 in poly)') in build_report([str(base), str(other)])


def test_runs_tested_on_other_data_are_separated(tmp_path):
    """One training recipe, but one run tested on another annotation file
    (tools/test.py --cfg-options test_dataloader.dataset.ann_file=...)."""
    shapes = _dataset_config('data/polyloss_shapes/')
    base = make_run(tmp_path, 'focal', FOCAL, 0.60, extra_config=shapes)
    other = make_run(tmp_path, 'poly', poly(-1.0), 0.20, extra_config=shapes)
    test_config = other / '20260102_090000' / 'vis_data' / 'config.py'
    test_config.write_text(test_config.read_text().replace('instances_val', 'instances_hard'))
    table = build_report([str(base), str(other)])
    assert ('Runs of another recipe, compared only among themselves (they differ from focal in '
            "the final test's test_dataloader.dataset: 'data/polyloss_shapes/annotations/"
            "instances_val.json' in focal, 'data/polyloss_shapes/annotations/instances_hard.json' "
            'in poly):') in table
    assert '| poly (baseline) | poly-1 eps=-1 | 20.0 |' in table
