"""The tree-crown dataset maker (tools/make_tree_data.py, tools/datasets/trees.py).

The quick tests tile a small image made here, with a hand-written Pascal VOC
file; the slow one fetches the deepforest wheel and checks the real dataset's
counts against its XML.
"""
import dataclasses
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tools import make_tree_data
from tools.datasets import dataset_dir, pinned_wheel, shapes, trees

from train_helpers import run_in_process

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'make_tree_data.py'

# A 200 x 160 image; validation block: the bottom 48 rows (112..160); gap: 24
# rows (88..112); training rows 0..88. Crowns (x1, y1, x2, y2), by design:
CROWNS = [
    (10, 10, 30, 30),     # 0: training region, inside the first tile
    (60, 20, 80, 40),     # 1: training region, cut by tile edges at x=64 (overlapping tiles)
    (100, 90, 120, 108),  # 2: in the gap: in no tile at all
    (20, 120, 40, 140),   # 3: validation block, inside one tile
    (56, 130, 76, 150),   # 4: validation, cut at x=64: 8/20 left (fragment), 12/20 right (box)
    (150, 100, 170, 120), # 5: centre in the gap (110), lower 8/20 in the val block: fragment
    (180, 140, 200, 160), # 6: validation, cut by the narrow last column (192..200)
]
VOC = """<annotation>
    <folder>data</folder>
    <filename>tiny.png</filename>
    <size><width>200</width><height>160</height><depth>3</depth></size>
{objects}
</annotation>
"""
OBJECT = """    <object>
        <name>Tree</name><pose>Unspecified</pose><truncated>0</truncated>
        <difficult>0</difficult>
        <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>
    </object>"""
CFG = trees.TreeConfig(tile_size=64, stride=32, gap=24, min_visible=0.5)
VAL_HEIGHT = 48
SHAPES = shapes.SyntheticConfig(num_train=2, num_val=1, img_size=32, max_size=20.0)


def voc_text(crowns=CROWNS, label='Tree') -> str:
    objects = '\n'.join(OBJECT.format(*c) for c in crowns)
    return VOC.format(objects=objects.replace('<name>Tree', f'<name>{label}'))


def tiny_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(160, 200, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def tiled(tmp_path_factory):
    out = tmp_path_factory.mktemp('tiles')
    width, height, boxes = trees.read_voc(voc_text())
    assert (width, height, len(boxes)) == (200, 160, len(CROWNS))
    counts = trees.tile_images([('tiny', 'tiny.png', tiny_image(), boxes, VAL_HEIGHT)],
                               out, CFG, 'test')
    return out, counts


def _coco(out: Path, split: str) -> COCO:
    return COCO(str(out / 'annotations' / f'instances_{split}.json'))


def test_tile_positions():
    assert trees.sliding_origins(200, 64, 32) == [0, 32, 64, 96, 128, 136]
    assert trees.sliding_origins(64, 64, 32) == [0]
    assert trees.sliding_origins(40, 64, 32) == [0]
    assert trees.partition(200, 64) == [(0, 64), (64, 64), (128, 64), (192, 8)]
    assert trees.partition(128, 64) == [(0, 64), (64, 64)]


def test_layout_rows_and_tiles(tiled):
    _, counts = tiled
    image = counts['images']['tiny']
    assert image['train_rows'] == [0, 88]
    assert image['gap_rows'] == [88, 112]
    assert image['val_rows'] == [112, 160]
    layout = trees.make_layout(200, 160, VAL_HEIGHT, CFG)
    train = layout.train_tiles(CFG)
    # Rows 0, 24 (flush with row 88); columns 0, 32, ..., 136.
    assert sorted({y for _, y, _, _ in train}) == [0, 24]
    assert all(y + h <= 88 and (w, h) == (64, 64) for _, y, w, h in train)
    val = layout.val_tiles(CFG)
    assert sorted(val) == sorted([(x, 112, w, 48) for x, w in
                                  [(0, 64), (64, 64), (128, 64), (192, 8)]])
    assert image['train_tiles'] == len(train) == 12 and image['val_tiles'] == 4


def test_coco_files_and_pixels(tiled):
    out, _ = tiled
    source = tiny_image()
    for split in ('train', 'val'):
        coco = _coco(out, split)
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == ['tree']
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(out / split / img['file_name']) as im:
                pixels = np.asarray(im)
            assert pixels.shape == (img['height'], img['width'], 3)
            x0, y0 = img['x0'], img['y0']
            assert (pixels == source[y0:y0 + img['height'], x0:x0 + img['width']]).all()
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
                x, y, w, h = ann['bbox']
                assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
                assert w > 0 and h > 0 and ann['area'] == w * h


def _boxes_of(coco: COCO, crown: int, crowd: int):
    return [a for a in coco.loadAnns(coco.getAnnIds()) if a['crown'] == crown
            and a['iscrowd'] == crowd]


def test_cut_crowns_and_the_split(tiled):
    out, counts = tiled
    train, val = _coco(out, 'train'), _coco(out, 'val')
    train_crowns = {a['crown'] for a in train.loadAnns(train.getAnnIds()) if not a['iscrowd']}
    val_crowns = {a['crown'] for a in val.loadAnns(val.getAnnIds()) if not a['iscrowd']}
    assert train_crowns == {0, 1}
    assert val_crowns == {3, 4, 6}
    # Crown 2 lies in the gap: in no tile, not even as a fragment.
    assert not [a for c in (train, val) for a in c.loadAnns(c.getAnnIds()) if a['crown'] == 2]
    # Crown 4 is cut by the val tiles' edge at x=64: a fragment left, a box right.
    (box,), (fragment,) = _boxes_of(val, 4, 0), _boxes_of(val, 4, 1)
    assert val.loadImgs(box['image_id'])[0]['x0'] == 64 and box['bbox'] == [0, 18, 12, 20]
    assert val.loadImgs(fragment['image_id'])[0]['x0'] == 0
    assert fragment['bbox'] == [56, 18, 8, 20]
    # Crown 5 (centre in the gap) shows only as a fragment at the val block's top.
    assert not _boxes_of(val, 5, 0) and len(_boxes_of(val, 5, 1)) == 1
    # Crown 6 is cut by the narrow last column (192..200): 12/20 a box, 8/20 a fragment.
    (box,), (fragment,) = _boxes_of(val, 6, 0), _boxes_of(val, 6, 1)
    assert val.loadImgs(box['image_id'])[0]['x0'] == 128 and box['bbox'] == [52, 28, 12, 20]
    assert val.loadImgs(fragment['image_id'])[0]['width'] == 8
    assert fragment['bbox'] == [0, 28, 8, 20]
    # Crown 1 is whole in some overlapping training tile and cut in others.
    whole = [a for a in _boxes_of(train, 1, 0) if a['bbox'][2:] == [20, 20]]
    assert whole and len(_boxes_of(train, 1, 0)) > len(whole)
    assert counts['images']['tiny']['by_centre'] == dict(train_region=2, gap=2, val_block=3)
    assert counts['splits']['val']['crowns'] == 3 and counts['splits']['train']['crowns'] == 2
    assert counts['splits']['val']['boxes'] == 3  # each val crown scored once


def test_crowd_regions_are_ignored_by_coco_eval(tiled):
    """A detection on an ignore fragment is neither a hit nor a false positive."""
    from pycocotools.cocoeval import COCOeval
    out, _ = tiled
    val = _coco(out, 'val')
    dets = [dict(image_id=a['image_id'], category_id=1, bbox=a['bbox'], score=0.9)
            for a in val.loadAnns(val.getAnnIds())]  # boxes and fragments alike
    evaluator = COCOeval(val, val.loadRes(dets), 'bbox')
    evaluator.params.areaRng = [[0, 1e10]] * 4
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_gap_must_exceed_the_largest_crown(tmp_path):
    _, _, boxes = trees.read_voc(voc_text())
    with pytest.raises(ValueError, match=r'largest crown extent \(20 px\)'):
        trees.tile_images([('tiny', 'tiny.png', tiny_image(), boxes, VAL_HEIGHT)], tmp_path,
                          trees.TreeConfig(tile_size=64, stride=32, gap=16), 'test')


@pytest.mark.parametrize('text, message', [
    (voc_text(label='Dead'), "unexpected label 'Dead'"),
    ('<annotation><size>', 'not a readable Pascal VOC'),
    (voc_text([(10, 10, 5, 30)]), 'empty or outside'),
    (voc_text([(10, 10, 30, 170)]), 'empty or outside'),
])
def test_bad_voc_files(text, message):
    with pytest.raises(trees.DataError, match=message):
        trees.read_voc(text, 'x.xml')


# ---------------------------------------------------------------- build() on a fake wheel

@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A wheel holding the tiny image as the one source, pinned by its hash."""
    import io
    png = io.BytesIO()
    Image.fromarray(tiny_image()).save(png, format='PNG')
    member = 'deepforest/data/tiny'
    wheel = tmp_path / 'cache' / 'wheels' / trees.WHEEL.file_name
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr(member + '.png', png.getvalue())
        archive.writestr(member + '.xml', voc_text())
    monkeypatch.setattr(trees, 'WHEEL', dataclasses.replace(
        trees.WHEEL, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest()))
    monkeypatch.setattr(trees, 'SOURCES', (trees.Source('tiny', member, 200, 160,
                                                         len(CROWNS), VAL_HEIGHT),))
    monkeypatch.setenv('POLYLOSS_CACHE', str(tmp_path / 'cache'))
    return wheel


def test_build_is_idempotent(fake_wheel, tmp_path):
    out = tmp_path / 'data'
    meta = trees.build(str(out), CFG, sources=trees.SOURCES)
    assert meta['counts']['splits']['val']['boxes'] == 3
    assert json.loads((out / 'meta.json').read_text()) == meta
    stamp = (out / 'annotations' / 'instances_train.json').stat().st_mtime_ns
    assert trees.build(str(out), CFG, sources=trees.SOURCES) is None
    assert (out / 'annotations' / 'instances_train.json').stat().st_mtime_ns == stamp
    other = trees.TreeConfig(tile_size=64, stride=64, gap=24)
    assert trees.build(str(out), other, sources=trees.SOURCES)['params']['config']['stride'] \
        == 64
    assert trees.build(str(out), other, force=True, sources=trees.SOURCES) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cache', 'data']  # nothing left beside


def test_build_refuses_a_folder_it_did_not_make(fake_wheel, tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(trees.DataError, match='does not hold a dataset of this tool'):
        trees.build(str(out), CFG, sources=trees.SOURCES)
    assert (out / 'notes.txt').read_text() == 'keep me'


def files_of(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def test_build_refuses_a_folder_with_a_meta_json_it_did_not_write(fake_wheel, tmp_path):
    """A user's own meta.json, images and csv: refused, every byte kept (before: the
    folder was emptied and refilled with tiles)."""
    out = tmp_path / 'mine'
    (out / 'images').mkdir(parents=True)
    (out / 'meta.json').write_text('{"project": "my survey", "params": {"site": "YELL"}}')
    (out / 'images' / 'a.png').write_bytes(b'\x89PNG my image')
    (out / 'labels.csv').write_text('image,x,y\na.png,1,2\n')
    before = files_of(out)
    with pytest.raises(trees.DataError) as info:
        trees.build(str(out), CFG, sources=trees.SOURCES)
    assert str(info.value) == (f'{out} exists and does not hold a dataset of this tool (its '
                               'meta.json is not one tools/make_tree_data.py writes); remove it '
                               'or choose another folder')
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cache', 'mine']


def test_the_two_dataset_tools_leave_each_others_folders_alone(fake_wheel, tmp_path):
    """make_tree_data.py over a shapes dataset, make_demo_data.py over a tree dataset:
    each refused, nothing changed."""
    shapes_dir, trees_dir = tmp_path / 'shapes', tmp_path / 'trees'
    shapes.generate(str(shapes_dir), SHAPES)
    trees.build(str(trees_dir), CFG, sources=trees.SOURCES)
    before = {d: files_of(d) for d in (shapes_dir, trees_dir)}
    with pytest.raises(trees.DataError, match=re.escape(
            f'{shapes_dir} exists and does not hold a dataset of this tool (its meta.json is '
            'not one tools/make_tree_data.py writes)')):
        trees.build(str(shapes_dir), CFG, sources=trees.SOURCES)
    with pytest.raises(dataset_dir.NotOurs, match=re.escape(
            f'{trees_dir} exists and does not hold a dataset of this tool (its meta.json is '
            'not one tools/make_demo_data.py writes)')):
        shapes.generate(str(trees_dir), SHAPES)
    assert {d: files_of(d) for d in (shapes_dir, trees_dir)} == before


def test_a_file_it_does_not_write_stops_a_rebuild(fake_wheel, tmp_path):
    """The tool's own dataset with a user's file in it, rebuilt with other parameters:
    refused naming the file; nothing changed."""
    out = tmp_path / 'data'
    trees.build(str(out), CFG, sources=trees.SOURCES)
    (out / 'train' / 'my_notes.txt').write_text('keep me')
    before = files_of(out)
    other = trees.TreeConfig(tile_size=64, stride=64, gap=24)
    with pytest.raises(trees.DataError) as info:
        trees.build(str(out), other, sources=trees.SOURCES)
    assert str(info.value) == (f'{out} holds train/my_notes.txt, which tools/make_tree_data.py '
                               'does not write, so it cannot replace the folder; move that out '
                               'of it, or choose another folder (nothing was changed)')
    assert files_of(out) == before


def test_an_incomplete_dataset_is_rebuilt_saying_why(fake_wheel, tmp_path):
    """Most training tiles deleted: not 'already present'; rebuilt beside and swapped in,
    with a line saying why (before: 'already present', then a training traceback)."""
    out = tmp_path / 'data'
    trees.build(str(out), CFG, sources=trees.SOURCES)
    complete = files_of(out)
    names = [i['file_name'] for i in _coco(out, 'train').dataset['images']]
    for name in names[1:]:
        (out / 'train' / name).unlink()
    (out / 'val' / 'tiny_x0000_y0112.png').write_bytes(b'')  # an empty file counts as missing
    lines = []
    assert trees.build(str(out), CFG, sources=trees.SOURCES, log=lines.append) is not None
    assert lines == [f'{out}: rebuilding the dataset there: 11 of the 12 train images that '
                     f'annotations/instances_train.json names are missing or empty '
                     f'(train/{names[1]}, ...)']
    assert files_of(out) == complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cache', 'data']
    (out / 'val' / 'tiny_x0000_y0112.png').write_bytes(b'')
    assert trees.stale_reason(out, CFG) == (
        '1 of the 4 val images that annotations/instances_val.json names are missing or empty '
        '(val/tiny_x0000_y0112.png, ...)')
    (out / 'annotations' / 'instances_val.json').write_text('[]')
    assert trees.stale_reason(out, CFG) == ('annotations/instances_val.json is not an '
                                            'annotation file this tool wrote (TypeError)')
    (out / 'annotations' / 'instances_val.json').write_text('[' * 100_000)
    assert trees.stale_reason(out, CFG) == ('annotations/instances_val.json is not an '
                                            'annotation file this tool wrote (RecursionError)')
    (out / 'meta.json').write_text('[' * 100_000)  # no record of the tool's any more
    assert trees.stale_reason(out, CFG) == ''
    with pytest.raises(trees.DataError, match=r"its meta.json is not one tools/make_tree_data"):
        trees.build(str(out), CFG, sources=trees.SOURCES)


def test_a_failed_build_leaves_the_old_dataset_and_nothing_beside_it(fake_wheel, tmp_path,
                                                                      monkeypatch):
    """A full disk half-way through a rebuild: the old dataset as it was and no partial
    folder left (before: a data.partial folder stayed behind)."""
    out = tmp_path / 'data'
    trees.build(str(out), CFG, sources=trees.SOURCES)
    before = files_of(out)

    def full_disk(self, out_dir, description):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / 'annotations'))
    monkeypatch.setattr(trees._Split, 'write', full_disk)
    other = trees.TreeConfig(tile_size=64, stride=64, gap=24)
    with pytest.raises(OSError) as info:
        trees.build(str(out), other, sources=trees.SOURCES)
    assert info.value.errno == errno.ENOSPC
    assert re.fullmatch(re.escape(str(tmp_path)) + r'/\.data\.partial-\w+/annotations',
                        info.value.filename)
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cache', 'data']


def test_a_linked_out_dir_is_rebuilt_where_it_points(fake_wheel, tmp_path):
    """data/polyloss_trees -> /big/disk/trees: the link stays, the data stays on that disk."""
    real, link = tmp_path / 'disk' / 'trees', tmp_path / 'link'
    real.parent.mkdir()
    link.symlink_to(real)
    trees.build(str(link), CFG, sources=trees.SOURCES)
    other = trees.TreeConfig(tile_size=64, stride=64, gap=24)
    assert trees.build(str(link), other, sources=trees.SOURCES) is not None
    assert link.is_symlink() and link.resolve() == real
    assert json.loads((real / 'meta.json').read_text())['params']['config']['stride'] == 64
    assert sorted(p.name for p in real.parent.iterdir()) == ['trees']


@pytest.mark.parametrize('given', ['.', '..'])
def test_the_current_folder_or_one_above_is_refused_before_any_work(given, fake_wheel,
                                                                    tmp_path, monkeypatch):
    """``make_tree_data.py .``: one line naming OUT_DIR, before the wheel is read (before:
    ``PosixPath('.') has an empty name``)."""
    here = tmp_path / 'work' / 'here'
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    fake_wheel.unlink()  # not needed: the check comes first
    result = run_in_process(make_tree_data.main, [given], 'make_tree_data.py')
    where = ('the current folder', here) if given == '.' else \
        ('a folder above the current one', here.parent)
    assert (result.returncode, result.stderr) == (2, (
        f"make_tree_data.py: error: OUT_DIR '{given}' is {where[0]} ({where[1]}): the dataset "
        'is written beside OUT_DIR and swapped in for it, which cannot be done to a folder the '
        f'tool runs in; give a folder inside it, such as {given}/data\n'))
    assert not any(here.iterdir())


def test_wrong_hash_names_the_file_and_what_to_do(fake_wheel, tmp_path):
    fake_wheel.write_bytes(fake_wheel.read_bytes() + b'x')
    with pytest.raises(trees.DataError, match=f'delete {fake_wheel} and run again'):
        trees.build(str(tmp_path / 'data'), CFG, sources=trees.SOURCES)


def test_damaged_contents_are_one_error(fake_wheel, tmp_path, monkeypatch):
    with zipfile.ZipFile(fake_wheel, 'w') as archive:  # an image that is no PNG
        archive.writestr('deepforest/data/tiny.png', b'not a png')
        archive.writestr('deepforest/data/tiny.xml', voc_text())
    monkeypatch.setattr(trees, 'WHEEL', dataclasses.replace(
        trees.WHEEL, sha256=hashlib.sha256(fake_wheel.read_bytes()).hexdigest()))
    with pytest.raises(trees.DataError, match='cannot decode .*looks damaged: delete it'):
        trees.build(str(tmp_path / 'data'), CFG, sources=trees.SOURCES)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    """pip's last ERROR line and a hint: what a missing network looks like."""
    def fake_run(command, **kwargs):
        assert command[1:5] == ['-m', 'pip', 'download', '--no-deps']
        assert command[-1] == trees.WHEEL.requirement
        stderr = ("WARNING: Retrying ... 'NewConnectionError(...: Failed to establish a new "
                  "connection: [Errno 111] Connection refused')\nERROR: Could not find a "
                  "version that satisfies the requirement deepforest==2.1.0\nERROR: No "
                  "matching distribution found for deepforest==2.1.0\n")
        return subprocess.CompletedProcess(command, 1, '', stderr)
    monkeypatch.setattr(pinned_wheel.subprocess, 'run', fake_run)
    with pytest.raises(trees.DataError) as info:
        trees.WHEEL.fetch(cache=tmp_path)
    message = str(info.value)
    assert 'No matching distribution found' in message and 'no connection' in message
    assert '--wheel PATH' in message and '\n' not in message
    assert not list((tmp_path / 'wheels').iterdir())  # no partial download left


def test_cli_user_errors_are_one_line(tmp_path):
    bad = tmp_path / trees.WHEEL.file_name
    bad.write_bytes(b'junk')
    for args, message in (
            (['--wheel', str(bad)], 'has sha256'),
            (['--wheel', str(tmp_path / 'nothing.whl')], 'no such file'),
            (['--stride', '0'], '--stride must be in [1, --tile-size=256], got 0'),
            (['--min-visible', '2'], '--min-visible must be in (0, 1]')):
        result = subprocess.run([sys.executable, str(TOOL), str(tmp_path / 'd'), *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith('make_tree_data.py: error: ')
        assert message in result.stderr and result.stderr.count('\n') == 1
        assert not (tmp_path / 'd').exists()


# ---------------------------------------------------------------- the real wheel

@pytest.mark.slow
def test_real_dataset_counts_match_the_xml(tmp_path):
    """Fetches the wheel (PyPI, or the cache), builds the dataset, and checks
    every count against the two XML files read independently here."""
    out = tmp_path / 'trees'
    meta = trees.build(str(out))
    wheel = pinned_wheel.cache_dir() / 'wheels' / trees.WHEEL.file_name
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == trees.WHEEL.sha256
    import xml.etree.ElementTree as ET
    expected_val = 0
    with zipfile.ZipFile(wheel) as archive:
        for source in trees.SOURCES:
            root = ET.fromstring(archive.read(source.member + '.xml'))
            boxes = np.array([[float(o.find(f'bndbox/{k}').text)
                               for k in ('xmin', 'ymin', 'xmax', 'ymax')]
                              for o in root.iter('object')])
            assert {o.find('name').text for o in root.iter('object')} == {'Tree'}
            counts = meta['counts']['images'][source.key]
            assert counts['crowns'] == len(boxes) == source.crowns
            assert sum(counts['by_centre'].values()) == len(boxes)
            val_top = source.height - source.val_height
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            assert counts['by_centre']['val_block'] == int((cy >= val_top).sum())
            assert counts['by_centre']['train_region'] == \
                int((cy < val_top - 128).sum())
            # A val crown is scored where at least half its box lies in a val tile.
            for x0, w in trees.partition(source.width, 256):
                for y0, h in trees.partition(source.val_height, 256):
                    y0 += val_top
                    iw = np.clip(boxes[:, 2], x0, x0 + w) - np.clip(boxes[:, 0], x0, x0 + w)
                    ih = np.clip(boxes[:, 3], y0, y0 + h) - np.clip(boxes[:, 1], y0, y0 + h)
                    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                    expected_val += int((iw * ih >= 0.5 * area).sum())
    splits = meta['counts']['splits']
    assert splits['val']['boxes'] == expected_val == 197
    assert (splits['train']['tiles'], splits['val']['tiles']) == (283, 23)
    assert splits['train']['crowns'] == 586  # the crowns centred above the gaps
    for split in ('train', 'val'):
        coco = _coco(out, split)
        assert len(coco.getImgIds()) == splits[split]['tiles']
        assert sum(not a['iscrowd'] for a in coco.loadAnns(coco.getAnnIds())) == \
            splits[split]['boxes']
    assert trees.build(str(out)) is None  # the same dataset: nothing to do
