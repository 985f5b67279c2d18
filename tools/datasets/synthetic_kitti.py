"""A tiny synthetic LiDAR set in mmdet3d's KITTI layout (its v2 info files), made here.

No download: the scenes are drawn from a seed. Each is a flat ground plane
1.73 m below the sensor, a little clutter, and cars, pedestrians and cyclists
(KITTI's mean box sizes) as points on the faces of their boxes, in front of
the sensor and inside the camera's view (so KITTI's evaluation keeps them)::

    <root>/training/velodyne_reduced/NNNNNN.bin   float32 (N, 4): x, y, z, reflectance
    <root>/kitti_infos_{train,val}.pkl            {'metainfo', 'data_list'} as mmdet3d's
                                                  converter writes them (boxes in camera
                                                  coordinates, 2D boxes, ground plane)
    <root>/kitti_dbinfos_train.pkl                ObjectSample's database, and its points:
    <root>/kitti_gt_database/NNNNNN_<Class>_<i>.bin   relative to the box's bottom centre

tools/make_kitti3d_data.py writes it through tools/datasets/dataset_dir.py (:data:`KIND`): a
``meta.json`` records it, a folder it did not write is refused (``data/kitti`` may hold the
real KITTI), the new set is written beside the old one and swapped in.

Validation scenes take sample indices 0..V-1 (mmdet3d's KittiMetric indexes its
annotation list by sample index), training scenes the ones after. The box
conversions (LiDAR to camera, corners to pixels) are mmdet3d's, so it needs mmdet3d.
"""
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from tools.datasets.dataset_dir import DatasetKind

#: mmdet3d's KITTI categories (the raw labels of the info files).
CATEGORIES = {'Pedestrian': 0, 'Cyclist': 1, 'Car': 2, 'Van': 3, 'Truck': 4,
              'Person_sitting': 5, 'Tram': 6, 'Misc': 7}
#: Box size (length, width, height, metres) and points drawn on it, per class drawn.
OBJECTS = {'Car': ((3.9, 1.6, 1.56), 220), 'Pedestrian': ((0.8, 0.6, 1.73), 80),
           'Cyclist': ((1.76, 0.6, 1.73), 90)}
SENSOR_HEIGHT = 1.73
IMAGE_SIZE = (375, 1242)  # height, width
#: LiDAR (x forward, y left, z up) to camera (x right, y down, z forward), KITTI's rectified
#: frame with no offset; a pinhole camera with a KITTI-like focal length.
LIDAR2CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
CAM2IMG = np.array([[700, 0, 621, 0], [0, 700, 187.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                   dtype=np.float64)


def _box_surface_points(rng: np.random.Generator, size: Tuple[float, float, float],
                        count: int) -> np.ndarray:
    """``count`` points on the five visible faces (sides, top) of a box centred on
    x, y = 0 with its bottom at z = 0, in the box's own frame; 1 % inside the
    faces, so they count as in the box wherever the test is strict."""
    length, width, height = size
    local = rng.uniform(-0.5, 0.5, (count, 3)) * (length, width, height)
    face = rng.integers(0, 5, count)  # 0-3: the sides, 4: the top
    axis = np.where(face < 2, 0, np.where(face < 4, 1, 2))
    sign = np.where(face % 2 == 0, 0.495, -0.495)
    local[np.arange(count), axis] = sign * np.array([length, width, height])[axis]
    local[:, 2] += height / 2
    return local


def _rotate_z(points: np.ndarray, yaw: float) -> np.ndarray:
    cos, sin = np.cos(yaw), np.sin(yaw)
    out = points.copy()
    out[:, 0] = cos * points[:, 0] - sin * points[:, 1]
    out[:, 1] = sin * points[:, 0] + cos * points[:, 1]
    return out


def _place_boxes(rng: np.random.Generator, classes: List[str]) -> List[Tuple[str, np.ndarray]]:
    """Non-overlapping LiDAR boxes (x, y, z_bottom, l, w, h, yaw) in the camera's view."""
    placed: List[Tuple[str, np.ndarray]] = []
    while len(placed) < len(classes):
        name = classes[len(placed)]
        (length, width, height), _ = OBJECTS[name]
        x = rng.uniform(6.0, 28.0)
        y = rng.uniform(-0.35, 0.35) * x  # about +-19 degrees: inside the image
        box = np.array([x, y, -SENSOR_HEIGHT, length, width, height, rng.uniform(-np.pi, np.pi)])
        if all(np.hypot(*(box[:2] - other[:2])) > 5.0 for _, other in placed):
            placed.append((name, box))
    return placed


def _instances(boxes: List[Tuple[str, np.ndarray]], counts: List[int]) -> List[Dict]:
    """The info file's ``instances``: camera boxes, 2D boxes, KITTI's fields."""
    import torch
    from mmdet3d.structures import Box3DMode, LiDARInstance3DBoxes, points_cam2img

    stacked = np.stack([b for _, b in boxes])
    lidar = LiDARInstance3DBoxes(torch.tensor(stacked, dtype=torch.float32))
    camera = lidar.convert_to(Box3DMode.CAM, torch.tensor(LIDAR2CAM, dtype=torch.float32))
    pixels = points_cam2img(camera.corners, torch.tensor(CAM2IMG, dtype=torch.float32))
    height, width = IMAGE_SIZE
    instances = []
    rows = zip(boxes, camera.tensor, pixels, strict=True)
    for i, ((name, _), cam_box, corners) in enumerate(rows):
        x0, y0 = corners.min(0).values.clamp(min=0).tolist()
        x1, y1 = corners.max(0).values.tolist()
        x, _, z = cam_box[:3].tolist()
        label = CATEGORIES[name]
        instances.append(dict(
            bbox=[x0, y0, min(x1, width - 1.0), min(y1, height - 1.0)], bbox_label=label,
            bbox_3d=cam_box.tolist(), bbox_label_3d=label, depth=z,
            center_2d=points_cam2img(cam_box[None, :3], torch.tensor(CAM2IMG, dtype=torch.float32)
                                     )[0].tolist(),
            num_lidar_pts=counts[i], difficulty=0, truncated=0.0, occluded=0,
            alpha=float(cam_box[6] - np.arctan2(x, z)), score=0.0, index=i, group_id=i))
    return instances


def make_scene(rng: np.random.Generator, classes: List[str]
               ) -> Tuple[np.ndarray, List[Tuple[str, np.ndarray]], List[np.ndarray]]:
    """Points (N, 4), the LiDAR boxes, and each object's own points."""
    ground = np.column_stack([rng.uniform(0, 60, 3000), rng.uniform(-30, 30, 3000),
                              np.full(3000, -SENSOR_HEIGHT) + rng.normal(0, 0.02, 3000)])
    clutter = np.column_stack([rng.uniform(0, 60, 300), rng.uniform(-30, 30, 300),
                               rng.uniform(-SENSOR_HEIGHT, 0.5, 300)])
    boxes = _place_boxes(rng, classes)
    objects = []
    for name, box in boxes:
        size, count = OBJECTS[name]
        objects.append(_rotate_z(_box_surface_points(rng, size, count), box[6]) + box[:3])
    xyz = np.concatenate([ground, clutter, *objects])
    points = np.column_stack([xyz, rng.uniform(0, 1, len(xyz))]).astype(np.float32)
    return points, boxes, [np.column_stack([o, rng.uniform(0, 1, len(o))]).astype(np.float32)
                           for o in objects]


def _scene_classes(rng: np.random.Generator) -> List[str]:
    return (['Car'] * int(rng.integers(2, 5)) + ['Pedestrian'] * int(rng.integers(1, 3))
            + ['Cyclist'] * int(rng.integers(0, 2)))


def _info(idx: int, boxes, objects) -> Dict:
    lidar2img = CAM2IMG @ LIDAR2CAM
    return dict(
        sample_idx=idx,
        images=dict(CAM2=dict(img_path=f'{idx:06d}.png', height=IMAGE_SIZE[0], width=IMAGE_SIZE[1],
                              cam2img=CAM2IMG.tolist(), lidar2cam=LIDAR2CAM.tolist(),
                              lidar2img=lidar2img.tolist()),
                    R0_rect=np.eye(4).tolist()),
        lidar_points=dict(num_pts_feats=4, lidar_path=f'{idx:06d}.bin',
                          Tr_velo_to_cam=LIDAR2CAM.tolist(), Tr_imu_to_velo=np.eye(4).tolist()),
        instances=_instances(boxes, [len(o) for o in objects]),
        # The ground in camera coordinates (a, b, c, d): -y + 1.73 = 0.
        plane=[0.0, -1.0, 0.0, SENSOR_HEIGHT])


def make_kitti_set(root: Path, train: int = 8, val: int = 4, seed: int = 0) -> Dict[str, int]:
    """Write the set under ``root``; returns the number of scenes and objects written."""
    if train < 1 or val < 1:
        raise ValueError(f'train and val need a scene each, got train={train}, val={val}')
    rng = np.random.default_rng(seed)
    points_dir = root / 'training' / 'velodyne_reduced'
    database_dir = root / 'kitti_gt_database'
    points_dir.mkdir(parents=True, exist_ok=True)
    database_dir.mkdir(exist_ok=True)
    metainfo = dict(categories=CATEGORIES, dataset='kitti', info_version='1.1')
    splits: Dict[str, List[Dict]] = {'val': [], 'train': []}
    database: Dict[str, List[Dict]] = {name: [] for name in OBJECTS}
    for idx in range(val + train):
        split = 'val' if idx < val else 'train'
        points, boxes, objects = make_scene(rng, _scene_classes(rng))
        points.tofile(points_dir / f'{idx:06d}.bin')
        splits[split].append(_info(idx, boxes, objects))
        if split == 'train':
            for i, ((name, box), own) in enumerate(zip(boxes, objects, strict=True)):
                path = f'kitti_gt_database/{idx:06d}_{name}_{i}.bin'
                relative = own.copy()
                relative[:, :3] -= box[:3]
                relative.tofile(root / path)
                database[name].append(dict(
                    name=name, path=path, image_idx=idx, gt_idx=i,
                    box3d_lidar=box.astype(np.float32), num_points_in_gt=len(own),
                    difficulty=0, group_id=i))
    for split, infos in splits.items():
        with open(root / f'kitti_infos_{split}.pkl', 'wb') as file:
            pickle.dump(dict(metainfo=metainfo, data_list=infos), file)
    with open(root / 'kitti_dbinfos_train.pkl', 'wb') as file:
        pickle.dump(database, file)
    return dict(train=train, val=val,
                objects=sum(len(info['instances']) for infos in splits.values() for info in infos))


TOOL = 'tools/make_kitti3d_data.py'
#: The files the set has at its top level, and the names inside its two folders.
_TOP_FILES = {'kitti_infos_train.pkl', 'kitti_infos_val.pkl', 'kitti_dbinfos_train.pkl'}
_INSIDE = {'training': re.compile(r'velodyne_reduced'),
           'training/velodyne_reduced': re.compile(r'[0-9]{6}\.bin'),
           'kitti_gt_database': re.compile(r'[0-9]{6}_(Car|Pedestrian|Cyclist)_[0-9]+\.bin')}


@dataclass(frozen=True)
class KittiSetKind(DatasetKind):
    """tools/datasets/dataset_dir.py's view of this set: its record and its files."""

    def foreign_files(self, folder: Path) -> Iterator[str]:
        """The entries of ``folder`` (relative names) this tool does not write."""
        for entry in sorted(folder.rglob('*')):
            name = entry.relative_to(folder).as_posix()
            parent = entry.parent.relative_to(folder).as_posix()
            if entry.is_symlink():
                yield name
            elif parent == '.':
                if not (name in _TOP_FILES | {'meta.json'} and entry.is_file()
                        or name in _INSIDE and entry.is_dir()):
                    yield name + ('/' if entry.is_dir() else '')
            elif parent not in _INSIDE or not _INSIDE[parent].fullmatch(entry.name) or (
                    entry.is_dir() != (name in _INSIDE)):
                yield name + ('/' if entry.is_dir() else '')


def record(train: int, val: int, seed: int) -> Dict[str, Any]:
    """The ``meta.json`` of a set: the tool and its parameters."""
    return dict(tool=TOOL, train=train, val=val, seed=seed)


KIND = KittiSetKind(TOOL, lambda meta: isinstance(meta, dict) and meta.get('tool') == TOOL
                    and set(meta) == set(record(0, 0, 0)), re.compile(''))
