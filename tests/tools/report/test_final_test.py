"""The report never shows a wrong number (tools/lib/sweep/report/runs.py): a row is
the test of the checkpoint training ended with, unfinished runs are left out and
named, malformed metrics files are one line naming the file."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweep_report import FOCAL, TOOL, make_run, poly, set_config

from tools.lib.sweep.report import SweepReportError, build_report, load_run


def add_test(work: Path, stamp: str, checkpoint: str, ap: float) -> Path:
    """A later tools/test.py run of ``checkpoint`` in ``work``."""
    run = work / stamp
    (run / 'vis_data').mkdir(parents=True)
    (run / f'{stamp}.json').write_text(json.dumps({'coco/bbox_mAP': ap}))
    config = (work / '20260102_090000' / 'vis_data' / 'config.py').read_text()
    (run / 'vis_data' / 'config.py').write_text(
        config.rsplit('load_from', 1)[0] + f'load_from = {checkpoint!r}\n')
    return run


def test_a_later_test_of_an_older_checkpoint_does_not_change_the_row(tmp_path):
    """Tried: tools/test.py of epoch_4.pth after the sweep; the row showed its mAP."""
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    add_test(work, '20260105_100000', str(work / 'epoch_4.pth'), 0.99)
    result = load_run(str(work))
    assert result.metrics['bbox_mAP'] == 0.30
    assert result.source.endswith('20260102_090000.json')
    # A newer test of the final checkpoint itself is that checkpoint's newest test.
    add_test(work, '20260106_100000', str(work / 'epoch_12.pth'), 0.31)
    assert load_run(str(work)).metrics['bbox_mAP'] == 0.31
    # The work dir moved: its checkpoint is still found by its name in a folder of its name.
    add_test(work, '20260107_100000', '/elsewhere/r/epoch_12.pth', 0.32)
    assert load_run(str(work)).metrics['bbox_mAP'] == 0.32


def test_a_run_killed_at_epoch_2_of_12_is_left_out_and_the_table_says_so(tmp_path):
    """Tried: its epoch-2 validation showed under schedule=12 with no mark."""
    base = make_run(tmp_path, 'focal', FOCAL, 0.30)
    killed = make_run(tmp_path, 'killed', poly(-1.0), 0.90, stale_ap=0.2)
    (killed / 'epoch_12.pth').rename(killed / 'epoch_2.pth')
    (killed / 'last_checkpoint').write_text(str(killed / 'epoch_2.pth'))
    set_config(killed, f'model = dict(bbox_head=dict(loss_cls={poly(-1.0)}))\n'
               'train_cfg = dict(max_epochs=12)\n')  # its test of epoch_2.pth: not a result
    assert load_run(str(killed)).unfinished == 'training stopped at epoch 2 of 12'
    table = build_report([str(base), str(killed)], baseline=str(killed))
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert len(rows) == 2 and rows[1].startswith('| focal (baseline)')
    assert not any('killed' in row or '90.0' in row for row in rows)
    assert table.endswith(
        'Not in the tables: 1 of 2 runs have no test of the checkpoint their training ended '
        'with (unfinished):\n\n- killed: training stopped at epoch 2 of 12\n\n'
        f'The baseline {killed} is one of them: the deltas are against focal.')


def test_the_sweeps_marker_decides_whether_training_finished(tmp_path):
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    for state, unfinished in (('training', "training has not finished (the sweep marks it "
                                           "'training')"), ('trained', ''), ('tested', '')):
        (work / '.sweep-run.json').write_text(json.dumps({'key': 'k', 'state': state}))
        assert load_run(str(work)).unfinished == unfinished
    (work / '.sweep-run.json').unlink()
    (work / 'epoch_12.pth').rename(work / 'published.pth')
    (work / 'last_checkpoint').write_text(str(work / 'published.pth'))
    assert load_run(str(work)).unfinished.startswith('cannot tell that published.pth is where')


def test_a_finished_run_without_a_test_of_its_final_checkpoint_is_left_out(tmp_path):
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    (work / '20260102_090000' / '20260102_090000.json').unlink()
    assert load_run(str(work)).unfinished == ('no tools/test.py run of epoch_12.pth, the '
                                              'checkpoint its training ended with')


DEEP = '{"coco/bbox_mAP": ' + '[' * 100000 + ']' * 100000 + '}'


@pytest.mark.parametrize('content, message', [
    (b'{"coco/bbox_mAP": true}', 'coco/bbox_mAP = true is not a COCO metric'),
    (b'{"coco/bbox_mAP": NaN}', 'not a JSON metrics record (NaN is not a number a metric '
                                'can have)'),
    (b'{"coco/bbox_mAP": -Infinity}', '-Infinity is not a number a metric can have'),
    (b'{"coco/bbox_mAP": 1e999}', 'coco/bbox_mAP = inf is not a COCO metric'),
    (b'{"coco/bbox_mAP": 1' + b'0' * 400 + b'}', 'is not a COCO metric'),
    (b'{"coco/bbox_mAP": 1' + b'0' * 5000 + b'}', 'not a JSON metrics record (Exceeds the '
                                               'limit'),
    (b'{"coco/bbox_mAP": 37.2}', 'coco/bbox_mAP = 37.2 is not a COCO metric (a number from '
                                 '0 to 1, or -1)'),
    (b'{"coco/bbox_mAP": "0.3"}', 'coco/bbox_mAP = "0.3" is not a COCO metric'),
    (DEEP.encode(), 'nested too deeply to be a metrics record'),
    (b'{"coco/bbox_mAP": 0.3, "x": "\xff\xfe"}', 'not UTF-8 text (byte 0xff at offset 29)'),
    (b'{"coco/bbox_mAP": 0.3}\n{"coco/bbox_mAP": 0.\n{"coco/bbox_mAP": 0.3}\n',
     ':2: not a JSON metrics record ('),
])
def test_malformed_metrics_are_one_line_naming_the_file(tmp_path, content, message):
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    result = work / '20260102_090000' / '20260102_090000.json'
    result.write_bytes(content)
    with pytest.raises(SweepReportError, match=None) as error:
        load_run(str(work))
    assert str(result) in str(error.value) and message in str(error.value)
    cli = subprocess.run([sys.executable, str(TOOL), str(work)], capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 2 and cli.stdout == ''
    assert cli.stderr.startswith(f'sweep_report.py: error: {result}')
    assert cli.stderr.count('\n') == 1 and 'Traceback' not in cli.stderr


@pytest.mark.parametrize('line', [b'{"loss": NaN, "step": 1}', b'{"loss": 1.0, "coco/bbox_mAP'
                                  b'": true, "step": 1}', b'\xc3\x28'])
def test_a_malformed_scalars_json_is_named_too(tmp_path, line):
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    scalars = work / '20260101_120000' / 'vis_data' / 'scalars.json'
    scalars.write_bytes(line + b'\n')
    if b'true' in line:  # training's validations are not read for numbers
        assert load_run(str(work)).metrics['bbox_mAP'] == 0.30
        return
    with pytest.raises(SweepReportError) as error:
        load_run(str(work))
    assert str(error.value).startswith(str(scalars))


def test_a_last_line_cut_short_by_a_kill_is_left_out(tmp_path):
    work = make_run(tmp_path, 'r', FOCAL, 0.30)
    scalars = work / '20260101_120000' / 'vis_data' / 'scalars.json'
    scalars.write_text(scalars.read_text() + '{"loss": 0.9, "st')
    assert load_run(str(work)).metrics['bbox_mAP'] == 0.30


def test_a_work_dir_of_tests_only_counts_if_it_tested_where_training_ended(tmp_path):
    """tools/test.py --work-dir elsewhere: the checkpoint's own work dir says
    whether it is where training ended."""
    trained = make_run(tmp_path, 'trained', FOCAL, 0.30)
    tests = tmp_path / 'tests_only'
    add_test(trained, '20260105_100000', str(trained / 'epoch_12.pth'), 0.33).rename(
        tmp_path / 'moved')
    tests.mkdir()
    (tmp_path / 'moved').rename(tests / '20260105_100000')
    assert load_run(str(tests)).metrics['bbox_mAP'] == 0.33
    (trained / 'last_checkpoint').write_text(str(trained / 'epoch_13.pth'))
    assert load_run(str(tests)).unfinished == 'no checkpoint yet (no last_checkpoint file)'
