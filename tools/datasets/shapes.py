"""A small COCO-format dataset of drawn shapes (a task a CPU learns in minutes), from a seed.

One to six filled shapes an image (five classes told apart by shape; colours are random) on a
noisy background; imbalanced classes (about 45/25/15/10/5 %), COCO's small and medium sizes
with a few large, overlaps of at most ``max_overlap`` of the smaller box. Under ``out_dir``:
``{train,val}/000000.jpg ...``, ``annotations/instances_{train,val}.json`` and ``meta.json``
(the parameters: the tool's record that it made the folder). The same parameters always give
byte-identical files."""
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

from tools.datasets.dataset_dir import (
    DatasetKind,
    check_replaceable,
    incomplete,
    target,
    written_beside,
)

CLASSES: tuple[str, ...] = ('disk', 'square', 'triangle', 'ring', 'cross')  # most frequent first
#: One colour per class for mmdet's visualiser (the images use random colours).
PALETTE: tuple[tuple[int, int, int], ...] = ((220, 20, 60), (0, 128, 255), (60, 180, 75),
                                              (255, 165, 0), (145, 30, 180))
#: Outlines of the polygon classes in [-1, 1]^2 (disk and ring are ellipses).
_T = 0.35  # half-width of the cross's bars
POLYGONS = dict(square=[(-1, -1), (1, -1), (1, 1), (-1, 1)],
                triangle=[(0, -1), (1, 1), (-1, 1)],
                cross=[(-_T, -1), (_T, -1), (_T, -_T), (1, -_T), (1, _T), (_T, _T), (_T, 1),
                       (-_T, 1), (-_T, _T), (-1, _T), (-1, -_T), (-_T, -_T)])

BBox = tuple[int, int, int, int]


@dataclass
class SyntheticConfig:
    """Parameters of the generated dataset (all stored in ``meta.json``)."""
    seed: int = 0
    num_train: int = 600
    num_val: int = 150
    img_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 10.0
    max_size: float = 100.0
    max_overlap: float = 0.35
    class_frequencies: tuple[float, ...] = (0.45, 0.25, 0.15, 0.10, 0.05)  # of CLASSES

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad parameter."""
        for name in ('num_train', 'num_val', 'img_size', 'min_objects'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.max_objects < self.min_objects:
            raise ValueError(f'max_objects must be >= min_objects ({self.min_objects}), '
                             f'got {self.max_objects}')
        if not 2 <= self.min_size <= self.max_size:
            raise ValueError(f'need 2 <= min_size <= max_size, got min_size={self.min_size}, '
                             f'max_size={self.max_size}')
        if self.max_size > self.img_size:
            raise ValueError(f'max_size must be <= img_size ({self.img_size}), got '
                             f'{self.max_size}')
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ValueError(f'max_overlap must be in [0, 1], got {self.max_overlap}')
        if len(self.class_frequencies) != len(CLASSES) or min(self.class_frequencies) <= 0:
            raise ValueError(f'class_frequencies must be {len(CLASSES)} positive numbers, '
                             f'got {self.class_frequencies}')


def _overlap(a: BBox, b: BBox) -> float:
    """Intersection of two ``(x1, y1, x2, y2)`` boxes over the smaller one (unlike IoU, large
    for a small box inside a large one: no object is hidden entirely by a later one)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def _draw_mask(label: str, size: int, cx: float, cy: float, w: float, h: float,
               angle: float) -> Image.Image:
    """Binary mask (mode 'L') of one shape, rotated by ``angle`` radians if a polygon."""
    mask = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if label in POLYGONS:
        cos, sin = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + (x * cos - y * sin) * w / 2, cy + (x * sin + y * cos) * h / 2)
                      for x, y in POLYGONS[label]], fill=255)
        return mask
    draw.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=255)
    if label == 'ring':  # a hole of 0.55 the size
        draw.ellipse((cx - w * 0.275, cy - h * 0.275, cx + w * 0.275, cy + h * 0.275), fill=0)
    return mask


def _make_image(rng: np.random.Generator, cfg: SyntheticConfig,
                class_probs: np.ndarray) -> tuple[np.ndarray, list[tuple[int, BBox, int]]]:
    """Draw one image; return it and its objects (label id, xyxy box, pixel area)."""
    size = cfg.img_size
    # Background: a smooth random colour gradient plus pixel noise.
    corners = rng.uniform(40, 215, size=(2, 2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    s = np.linspace(0.0, 1.0, size)[None, :, None]
    img = ((1 - t) * ((1 - s) * corners[0, 0] + s * corners[0, 1]) + t *
           ((1 - s) * corners[1, 0] + s * corners[1, 1]))
    img = np.clip(img + rng.normal(0.0, 12.0, size=(size, size, 3)), 0, 255).astype(np.uint8)
    objects: list[tuple[int, BBox, int]] = []
    log_lo, log_hi = math.log(cfg.min_size), math.log(cfg.max_size)
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        for _attempt in range(30):  # rejection sampling for low overlap
            label_id = int(rng.choice(len(CLASSES), p=class_probs))
            w = math.exp(rng.uniform(log_lo, log_hi))
            h = min(max(w * math.exp(rng.uniform(-0.25, 0.25)), cfg.min_size), float(size))
            cx = rng.uniform(w / 2, size - w / 2)
            cy = rng.uniform(h / 2, size - h / 2)
            angle = rng.uniform(-math.pi / 8, math.pi / 8)
            mask = _draw_mask(CLASSES[label_id], size, cx, cy, w, h, angle)
            bbox = mask.getbbox()  # exact, after rasterisation
            if bbox is not None and all(_overlap(bbox, o[1]) <= cfg.max_overlap
                                        for o in objects):
                break
        else:
            continue  # no placement found: draw fewer objects
        mask_arr = np.asarray(mask) > 0
        centre = img[int(min(cy, size - 1)), int(min(cx, size - 1))].astype(int)
        for _ in range(20):  # a colour at least 60 (L1 / 3) from the background
            colour = rng.integers(0, 256, size=3)
            if np.abs(colour - centre).mean() >= 60:
                break
        img[mask_arr] = colour.astype(np.uint8)
        objects.append((label_id, bbox, int(mask_arr.sum())))
    return img, objects


def _write_split(root: Path, split: str, num_images: int, seed: int, cfg: SyntheticConfig,
                 class_probs: np.ndarray) -> None:
    """One split's images under ``root/split`` and its ``annotations/instances_<split>.json``."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for img_id in range(num_images):
        img, objects = _make_image(rng, cfg, class_probs)
        file_name = f'{img_id:06d}.jpg'
        Image.fromarray(img).save(root / split / file_name, quality=95)
        images.append(dict(id=img_id, file_name=file_name, width=cfg.img_size,
                           height=cfg.img_size))
        for label_id, (x1, y1, x2, y2), area in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id,
                                    category_id=label_id + 1,
                                    bbox=[x1, y1, x2 - x1, y2 - y1], area=area, iscrowd=0))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(dict(
        info=dict(description='mmdet-polyloss synthetic shapes', seed=seed),
        images=images, annotations=annotations, categories=categories)))


def _meta(cfg: SyntheticConfig) -> dict:
    """The ``meta.json`` of the dataset of ``cfg``: its parameters and class names."""
    return dict(asdict(cfg), class_frequencies=list(cfg.class_frequencies), classes=list(CLASSES))


#: What tools/make_demo_data.py writes (tools/datasets/dataset_dir.py): a ``meta.json`` holding
#: exactly the parameters' keys, JPEG images numbered from 000000.
KIND = DatasetKind('tools/make_demo_data.py',
                   lambda meta: isinstance(meta, dict) and set(meta) == set(_meta(
                       SyntheticConfig())),
                   re.compile(r'[0-9]{6,}\.jpg'))


def generate(out_dir: str, cfg: Optional[SyntheticConfig] = None, force: bool = False,
             log: Callable[[str], None] = lambda line: None) -> bool:
    """Write the dataset to ``out_dir``; False (nothing written) if it holds the same one,
    complete. One of this tool that is incomplete is regenerated (``log`` says why); a
    folder that is not one is refused (tools/datasets/dataset_dir.py)."""
    cfg = cfg or SyntheticConfig()
    cfg.validate()
    root = target(out_dir)
    meta = _meta(cfg)
    if not force and KIND.read_record(root) == meta:
        why = incomplete(root, dict(train=cfg.num_train, val=cfg.num_val))
        if not why:
            return False
        log(f'{out_dir}: generating the dataset there again: {why}')
    check_replaceable(root, KIND)
    probs = np.asarray(cfg.class_frequencies, dtype=np.float64)
    probs = probs / probs.sum()
    with written_beside(root) as built:
        # Different seeds per split so val is not a copy of the start of train.
        _write_split(built, 'train', cfg.num_train, cfg.seed * 2, cfg, probs)
        _write_split(built, 'val', cfg.num_val, cfg.seed * 2 + 1, cfg, probs)
        (built / 'meta.json').write_text(json.dumps(meta, indent=2))
    return True


def class_counts(ann_file: str) -> dict[str, int]:
    """Number of annotations per class name in a COCO instances file."""
    data = json.loads(Path(ann_file).read_text())
    names = {c['id']: c['name'] for c in data['categories']}
    counts = dict.fromkeys(names.values(), 0)
    for ann in data['annotations']:
        counts[names[ann['category_id']]] += 1
    return counts
