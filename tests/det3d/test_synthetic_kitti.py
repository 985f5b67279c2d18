"""The synthetic KITTI set (tools/datasets/synthetic_kitti.py) read by mmdet3d's KittiDataset."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet3d_required import import_mmdet3d

import_mmdet3d()

from mmcv.ops import points_in_boxes_cpu  # noqa: E402
from mmdet3d.registry import DATASETS  # noqa: E402
from mmdet3d.utils import register_all_modules  # noqa: E402

from tools.datasets.synthetic_kitti import CATEGORIES, make_kitti_set  # noqa: E402

from train_helpers import load_tool, run_in_process  # noqa: E402

CLASSES = ['Pedestrian', 'Cyclist', 'Car']


@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('kitti')
    make_kitti_set(root, train=2, val=1, seed=3)
    return root


def kitti_dataset(root: Path, split: str):
    register_all_modules()
    return DATASETS.build(dict(
        type='KittiDataset', data_root=str(root), ann_file=f'kitti_infos_{split}.pkl',
        data_prefix=dict(pts='training/velodyne_reduced'), metainfo=dict(classes=CLASSES),
        modality=dict(use_lidar=True, use_camera=False), box_type_3d='LiDAR', pipeline=[]))


@pytest.mark.parametrize('split', ['train', 'val'])
def test_kitti_dataset_reads_boxes_around_their_points(kitti_root: Path, split: str):
    """Each box mmdet3d converts back to LiDAR holds the points drawn for its object
    (plus at most a few ground points under it), and its label is its class's."""
    infos = pickle.loads((kitti_root / f'kitti_infos_{split}.pkl').read_bytes())['data_list']
    dataset = kitti_dataset(kitti_root, split)
    assert len(dataset) == len(infos) >= 1
    for index, info in enumerate(infos):
        sample = dataset.get_data_info(index)  # mmdet3d's parsing: boxes in LiDAR coordinates
        points = np.fromfile(sample['lidar_points']['lidar_path'], dtype=np.float32)
        points = torch.from_numpy(points.reshape(-1, 4)[:, :3])
        boxes = sample['ann_info']['gt_bboxes_3d'].tensor
        inside = points_in_boxes_cpu(points[None], boxes[None])[0].sum(0)
        drawn = torch.tensor([inst['num_lidar_pts'] for inst in info['instances']])
        assert (inside >= drawn).all() and (inside <= drawn + 20).all(), (inside, drawn)
        raw = [inst['bbox_label_3d'] for inst in info['instances']]
        names = [next(k for k, v in CATEGORIES.items() if v == label) for label in raw]
        assert sample['ann_info']['gt_labels_3d'].tolist() == [CLASSES.index(n) for n in names]
        assert info['sample_idx'] == (index if split == 'val' else index + 1)


def test_database_points_sit_in_their_boxes(kitti_root: Path):
    database = pickle.loads((kitti_root / 'kitti_dbinfos_train.pkl').read_bytes())
    entries = [e for group in database.values() for e in group]
    assert {e['name'] for e in entries} <= set(CLASSES) and 'Car' in database
    for entry in entries:
        points = np.fromfile(kitti_root / entry['path'], dtype=np.float32).reshape(-1, 4)
        box = torch.tensor(entry['box3d_lidar'])[None, None].clone()
        box[..., :3] = 0  # database points are relative to the box's bottom centre
        inside = points_in_boxes_cpu(torch.from_numpy(points[None, :, :3]), box)
        assert int(inside.sum()) == len(points) == entry['num_points_in_gt']


def make_data(*args: str) -> subprocess.CompletedProcess:
    """tools/make_kitti3d_data.py in this process."""
    return run_in_process(load_tool('make_kitti3d_data').main, list(args), 'make_kitti3d_data.py')


def test_make_kitti3d_data_refuses_a_bad_count(tmp_path: Path):
    result = make_data(str(tmp_path), '--num-val', '0')
    assert result.returncode == 2
    assert "--num-val: expected an integer from 1 to 10000, got '0'" in result.stderr


def test_make_kitti3d_data_replaces_only_its_own_set(tmp_path: Path):
    """data/kitti may hold the real KITTI: a folder this tool did not write is refused
    untouched; its own set is replaced (a new seed, new points)."""
    real = tmp_path / 'kitti'
    real.mkdir()
    (real / 'kitti_infos_train.pkl').write_bytes(b'the real one')
    refused = make_data(str(real), '--num-train', '1', '--num-val', '1')
    assert refused.returncode == 2 and refused.stderr.count('\n') == 1
    assert 'does not hold a dataset of this tool (no meta.json)' in refused.stderr
    assert [p.name for p in real.iterdir()] == ['kitti_infos_train.pkl']
    assert (real / 'kitti_infos_train.pkl').read_bytes() == b'the real one'

    ours = tmp_path / 'synthetic'
    points = []
    for seed in ('1', '2'):
        made = make_data(str(ours), '--num-train', '1', '--num-val', '1', '--seed', seed)
        assert made.returncode == 0, made.stderr
        assert json.loads((ours / 'meta.json').read_text())['seed'] == int(seed)
        points.append((ours / 'training/velodyne_reduced/000000.bin').read_bytes())
    assert points[0] != points[1]
    (ours / 'kitti_gt_database' / 'notes.txt').write_text('mine')
    stray = make_data(str(ours), '--num-train', '1', '--num-val', '1')
    assert stray.returncode == 2
    assert 'holds kitti_gt_database/notes.txt, which tools/make_kitti3d_data.py' in stray.stderr
    assert json.loads((ours / 'meta.json').read_text())['seed'] == 2  # left as it was


#: Run in a subprocess: numba reads NUMBA_ENABLE_CUDASIM when it is first imported.
GROUND_TRUTH_AS_PREDICTION = '''
import json, sys
import torch
from mmdet3d.evaluation import KittiMetric
from mmdet3d.registry import DATASETS
from mmdet3d.utils import register_all_modules
register_all_modules()
root, classes = sys.argv[1], json.loads(sys.argv[2])
dataset = DATASETS.build(dict(
    type='KittiDataset', data_root=root, ann_file='kitti_infos_val.pkl',
    data_prefix=dict(pts='training/velodyne_reduced'), metainfo=dict(classes=classes),
    modality=dict(use_lidar=True, use_camera=False), box_type_3d='LiDAR', pipeline=[]))
metric = KittiMetric(ann_file=root + '/kitti_infos_val.pkl', metric='bbox')
metric.dataset_meta = dict(classes=classes)
for index in range(len(dataset)):
    info = dataset.get_data_info(index)
    boxes, labels = info['ann_info']['gt_bboxes_3d'], info['ann_info']['gt_labels_3d']
    # Moved 5 cm and turned 0.01 rad: KITTI's rotated IoU is degenerate (0) for two
    # identical boxes (parallel edges), not for boxes that nearly coincide.
    boxes.tensor[:, 0] += 0.05
    boxes.tensor[:, 6] += 0.01
    metric.process({}, [dict(sample_idx=info['sample_idx'], pred_instances=dict(),
                             pred_instances_3d=dict(bboxes_3d=boxes,
                                                    scores_3d=torch.ones(len(boxes)),
                                                    labels_3d=torch.as_tensor(labels)))])
print(json.dumps(metric.compute_metrics(metric.results)))
'''


@pytest.mark.slow
def test_kitti_metric_scores_the_ground_truth_as_found(tmp_path: Path):
    """The validation info file is one mmdet3d's own KittiMetric can score: the ground
    truth read back by KittiDataset, nudged and given as predictions, is found in 3D, in
    bird's-eye view and in the image alike (camera conversion, 2D boxes and difficulty
    all consistent). KITTI's AP40 reads precision at recall 1/40 ... 40/40 from one
    threshold per detection, so N objects of a class all found give 100 (N - 1) / 40
    for N <= 41."""
    root = tmp_path / 'kitti'
    make_kitti_set(root, train=1, val=4, seed=5)
    result = subprocess.run(
        [sys.executable, '-c', GROUND_TRUTH_AS_PREDICTION, str(root), json.dumps(CLASSES)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, NUMBA_ENABLE_CUDASIM='1', PYTHONWARNINGS='ignore'))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    infos = pickle.loads((root / 'kitti_infos_val.pkl').read_bytes())['data_list']
    labels = [inst['bbox_label_3d'] for info in infos for inst in info['instances']]
    counts = {name: labels.count(label) for name, label in CATEGORIES.items() if label in labels}
    assert counts.keys() >= {'Car', 'Pedestrian'} and counts['Car'] > 2
    for name, count in counts.items():
        for kind in ('3D', 'BEV', '2D'):
            key = f'pred_instances_3d/KITTI/{name}_{kind}_AP40_moderate_strict'
            assert metrics[key] == pytest.approx(100 * (min(count, 41) - 1) / 40), key
