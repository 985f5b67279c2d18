"""tools/sweep.py plans the 3D sweep as the 2D one: the Poly-1 loss found in the
anchor head (``bbox_head`` on KITTI, ``pts_bbox_head`` on Waymo), in mmdet's scope."""
import contextlib

import pytest

from mmdet3d_required import import_mmdet3d

import_mmdet3d()

from train_helpers import ROOT, load_tool, run_in_process  # noqa: E402

PP = 'configs/pointpillars/'
CASES = {
    'kitti': (PP + 'pointpillars_hv_secfpn_poly1-eps-1_8xb6-160e_kitti-3d-car.py',
              PP + 'pointpillars_hv_secfpn_8xb6-160e_kitti-3d-car.py', 'bbox_head',
              'pointpillars_hv_secfpn_poly1-eps{}_8xb6-160e_kitti-3d-car'),
    'waymo': (PP + 'pointpillars_hv_secfpn_sbn-all_poly1-eps-1_16xb2-2x_waymo-3d-3class.py',
              PP + 'pointpillars_hv_secfpn_sbn-all_16xb2-2x_waymo-3d-3class.py', 'pts_bbox_head',
              'pointpillars_hv_secfpn_sbn-all_poly1-eps{}_16xb2-2x_waymo-3d-3class'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_dry_run_plans_the_3d_sweep(tmp_path, case):
    poly, focal, head, name = CASES[case]
    with contextlib.chdir(ROOT):
        result = run_in_process(load_tool('sweep').main,
                                [poly, '--baseline', focal, '--epsilons', '-1', '-0.5', '0.5',
                                 '1', '--work-dir-root', str(tmp_path), '--dry-run'], 'sweep.py')
    assert result.returncode == 0, result.stderr
    plan = [line.split() for line in result.stdout.splitlines() if line.startswith('[sweep] ')]
    names = [row[1].rstrip(':') for row in plan if row[-1] == 'new']
    assert names == [focal.split('/')[-1][:-3],
                     *(name.format(e) for e in ('-1', '-0.5', '+0.5', '+1'))]
    for epsilon in ('-1.0', '-0.5', '0.5', '1.0'):
        assert f'model.{head}.loss_cls.epsilon={epsilon}' in result.stdout
    assert not any(tmp_path.iterdir())
