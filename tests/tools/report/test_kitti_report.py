"""The sweep report on mmdet3d runs: KittiMetric's APs (logged in points), the loss read
from ``bbox_head`` / ``pts_bbox_head`` in mmdet's scope. Work dirs made by hand."""
import json
from pathlib import Path
from typing import Dict

import pytest

from tools.lib.sweep.report import SweepReportError, build_report, load_run

KITTI = 'Kitti metric/pred_instances_3d/KITTI/'


def kitti_metrics(overall: float) -> Dict[str, float]:
    """A KittiMetric record as mmengine logs it (APs from 0 to 100), with keys the report
    does not read (AP11, easy) beside those it does."""
    return {f'{KITTI}Overall_3D_AP40_moderate': overall,
            f'{KITTI}Overall_BEV_AP40_moderate': overall + 8.0,
            f'{KITTI}Car_3D_AP40_moderate_strict': overall + 10.0,
            f'{KITTI}Pedestrian_3D_AP40_moderate_strict': overall - 10.0,
            f'{KITTI}Car_3D_AP11_easy_strict': 99.0,
            'data_time': 0.1}


def make_kitti_run(root: Path, name: str, head: str, loss: str, record: Dict,
                   head_type: str = 'PolyFocalAnchor3DHead') -> Path:
    """A finished mmdet3d run: epoch_2.pth in last_checkpoint, and a test of it."""
    work = root / name
    work.mkdir(parents=True)
    checkpoint = work / 'epoch_2.pth'
    checkpoint.write_bytes(b'PK')
    (work / 'last_checkpoint').write_text(str(checkpoint))
    config = (f'model = dict(type="VoxelNet", {head}=dict(type="{head_type}", '
              f'loss_cls={loss}))\ntrain_cfg = dict(max_epochs=2)\n')
    (work / f'{name}.py').write_text(config)
    test = work / '20260102_090000'
    (test / 'vis_data').mkdir(parents=True)
    (test / 'vis_data' / 'config.py').write_text(config + f'load_from = {str(checkpoint)!r}\n')
    (test / f'{test.name}.json').write_text(json.dumps(record))
    return work


FOCAL = 'dict(type="mmdet.FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25)'
POLY = 'dict(type="mmdet.Poly1FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, epsilon=-1.0)'


@pytest.mark.parametrize('head', ['bbox_head', 'pts_bbox_head'])
def test_kitti_runs_are_tabled_in_ap_points(tmp_path, head):
    # The baseline as configs/pointpillars has it: mmdet3d's own head with mmdet's FocalLoss.
    base = make_kitti_run(tmp_path, 'focal', head, FOCAL, kitti_metrics(60.0), 'Anchor3DHead')
    poly = make_kitti_run(tmp_path, 'eps-1', head, POLY, kitti_metrics(61.5))
    run = load_run(str(poly))
    assert (run.loss_type, run.epsilon, run.alpha_weighted) == ('Poly1FocalLoss', -1.0, True)
    assert run.metrics['kitti/Overall_3D_AP40_moderate'] == pytest.approx(0.615)
    assert 'kitti/Car_3D_AP11_easy_strict' in run.metrics and 'data_time' not in run.metrics
    rows = build_report([str(poly), str(base)], out_png=str(tmp_path / 'sweep.png')).splitlines()
    assert rows[0] == ('| run | loss | 3D AP40 mod | BEV AP40 mod | Car 3D | Ped 3D |')
    assert rows[2] == '| focal (baseline) | focal | 60.0 | 68.0 | 70.0 | 50.0 |'
    assert rows[3] == ('| eps-1 | poly-1 eps=-1 | 61.5 (+1.5) | 69.5 (+1.5) | 71.5 (+1.5) '
                       '| 51.5 (+1.5) |')
    assert (tmp_path / 'sweep.png').stat().st_size > 0


def test_a_kitti_ap_out_of_range_is_named(tmp_path):
    record = dict(kitti_metrics(60.0), **{f'{KITTI}Overall_3D_AP40_moderate': 160.0})
    work = make_kitti_run(tmp_path, 'focal', 'bbox_head', FOCAL, record)
    with pytest.raises(SweepReportError, match=r'20260102_090000\.json:1: Kitti metric/'
                       r'pred_instances_3d/KITTI/Overall_3D_AP40_moderate = 160\.0 is not a '
                       r'KITTI AP \(from 0 to 100\)'):
        load_run(str(work))


def test_a_test_without_a_main_metric_leaves_the_run_unfinished(tmp_path):
    record = {f'{KITTI}Car_3D_AP40_moderate_strict': 50.0}  # no overall AP: another metric
    work = make_kitti_run(tmp_path, 'focal', 'bbox_head', FOCAL, record)
    assert load_run(str(work)).unfinished.startswith('no tools/test.py run of epoch_2.pth')
