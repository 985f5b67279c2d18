"""The synthetic COCO-format dataset (tools/datasets/shapes.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tools.datasets import dataset_dir
from tools.datasets.shapes import (
    CLASSES,
    PALETTE,
    SyntheticConfig,
    class_counts,
    generate,
)
from tools.make_demo_data import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=12, num_val=4, img_size=96, max_size=60.0)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    assert generate(str(root), SyntheticConfig(seed=3, **SMALL)) is True
    return root


def test_pycocotools_reads_it_and_images_match(dataset):
    for split, num in (('train', 12), ('val', 4)):
        coco = COCO(str(dataset / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) == num
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
            CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(dataset / split / img['file_name']) as im:
                assert im.size == (img['width'], img['height']) == (96, 96)
        anns = coco.loadAnns(coco.getAnnIds())
        assert anns, 'every split has objects'
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
            assert w >= 2 and h >= 2
            assert 0 < ann['area'] <= w * h  # pixel area inside the box
            assert ann['iscrowd'] == 0


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = tmp_path / 'again'
    generate(str(again), SyntheticConfig(seed=3, **SMALL))
    for rel in ('annotations/instances_train.json', 'train/000005.jpg',
                'val/000003.jpg'):
        assert (again / rel).read_bytes() == (dataset / rel).read_bytes()
    other = tmp_path / 'other'
    generate(str(other), SyntheticConfig(seed=4, **SMALL))
    assert ((other / 'annotations/instances_train.json').read_bytes() !=
            (dataset / 'annotations/instances_train.json').read_bytes())


def test_train_and_val_are_different_images(dataset):
    train = np.asarray(Image.open(dataset / 'train' / '000000.jpg'))
    val = np.asarray(Image.open(dataset / 'val' / '000000.jpg'))
    assert not np.array_equal(train, val)


def test_rerun_with_same_parameters_is_skipped(dataset):
    stamp = (dataset / 'train' / '000000.jpg').stat().st_mtime_ns
    assert generate(str(dataset), SyntheticConfig(seed=3, **SMALL)) is False
    assert (dataset / 'train' / '000000.jpg').stat().st_mtime_ns == stamp
    assert generate(str(dataset), SyntheticConfig(seed=3, **SMALL),
                    force=True) is True


def test_default_dataset_is_imbalanced_with_varied_sizes(tmp_path):
    """The properties the demo relies on, on a mid-size sample."""
    generate(str(tmp_path), SyntheticConfig(seed=0, num_train=150, num_val=1))
    ann_file = tmp_path / 'annotations' / 'instances_train.json'
    counts = class_counts(str(ann_file))
    ordered = [counts[name] for name in CLASSES]
    assert ordered == sorted(ordered, reverse=True)
    assert ordered[0] > 5 * ordered[-1] > 0  # rare class: present, but rare
    anns = json.loads(ann_file.read_text())['annotations']
    areas = np.array([a['bbox'][2] * a['bbox'][3] for a in anns])
    # COCO size ranges: small < 32^2 <= medium < 96^2 <= large.
    assert (areas < 32**2).mean() > 0.2
    assert ((areas >= 32**2) & (areas < 96**2)).mean() > 0.2
    assert (areas >= 96**2).any()
    per_image = np.bincount([a['image_id'] for a in anns], minlength=150)
    assert per_image.max() >= 4 and per_image.min() >= 1
    assert _some_boxes_overlap(anns)


def _some_boxes_overlap(anns) -> bool:
    by_image = {}
    for a in anns:
        by_image.setdefault(a['image_id'], []).append(a['bbox'])
    for boxes in by_image.values():
        for i, (x1, y1, w1, h1) in enumerate(boxes):
            for x2, y2, w2, h2 in boxes[i + 1:]:
                if (min(x1 + w1, x2 + w2) > max(x1, x2)
                        and min(y1 + h1, y2 + h2) > max(y1, y2)):
                    return True
    return False


@pytest.mark.parametrize('kwargs, name', [
    (dict(num_train=0), 'num_train'),
    (dict(max_objects=0), 'max_objects'),
    (dict(min_size=50.0, max_size=20.0), 'min_size'),
    (dict(img_size=64, max_size=100.0), 'max_size'),
    (dict(max_overlap=1.5), 'max_overlap'),
    (dict(class_frequencies=(1.0, 1.0)), 'class_frequencies'),
])
def test_bad_parameters_are_named(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate(str(tmp_path), SyntheticConfig(**kwargs))
    assert not (tmp_path / 'meta.json').exists()


def test_command_line(tmp_path, capsys):
    out = tmp_path / 'cli'
    main([str(out), '--num-train', '3', '--num-val', '2', '--img-size', '64',
          '--max-size', '40'])
    assert 'generated' in capsys.readouterr().out
    main([str(out), '--num-train', '3', '--num-val', '2', '--img-size', '64',
          '--max-size', '40'])
    assert 'already present' in capsys.readouterr().out
    assert len(list((out / 'train').glob('*.jpg'))) == 3


def test_a_folder_it_did_not_make_is_left_alone(tmp_path):
    """Photos of one's own in OUT_DIR/train: refused, every byte kept (before: the shapes
    were written into the folder, over train/000000.jpg)."""
    out = tmp_path / 'photos'
    (out / 'train').mkdir(parents=True)
    (out / 'train' / '000000.jpg').write_bytes(b'my photo')
    with pytest.raises(dataset_dir.NotOurs) as info:
        generate(str(out), SyntheticConfig(seed=3, **SMALL))
    assert str(info.value) == (f'{out} exists and does not hold a dataset of this tool (no '
                               'meta.json); remove it or choose another folder')
    assert [p.name for p in out.rglob('*')] == ['train', '000000.jpg']
    assert (out / 'train' / '000000.jpg').read_bytes() == b'my photo'


def test_the_dataset_folder_has_a_plain_folders_mode(tmp_path):
    """Written beside and swapped in, it is still readable as a folder made by mkdir is."""
    (tmp_path / 'plain').mkdir()
    generate(str(tmp_path / 'made'), SyntheticConfig(seed=3, **SMALL))
    assert (tmp_path / 'made').stat().st_mode == (tmp_path / 'plain').stat().st_mode


def test_an_incomplete_dataset_is_generated_again_saying_why(tmp_path, capsys):
    out = tmp_path / 'cli'
    args = [str(out), '--num-train', '3', '--num-val', '2', '--img-size', '64',
            '--max-size', '40']
    main(args)
    complete = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    (out / 'val' / '000001.jpg').unlink()
    capsys.readouterr()
    main(args)
    assert capsys.readouterr().out.splitlines()[0] == (
        f'[make_demo_data] {out}: generating the dataset there again: 1 of the 2 val images '
        'that annotations/instances_val.json names are missing or empty (val/000001.jpg, ...)')
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cli']


@pytest.mark.parametrize('config', sorted((ROOT / 'configs' / 'demo').rglob('*.py')),
                         ids=lambda p: p.name)
def test_demo_configs_name_the_generated_classes_and_palette(config):
    """The demo configs repeat the dataset's class names and colours (a config
    cannot import them): every dataset in them must say what the generator
    writes, in its order, and the head must have one output per class."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        metainfo = cfg[loader]['dataset']['metainfo']
        assert tuple(metainfo['classes']) == CLASSES, loader
        assert [tuple(colour) for colour in metainfo['palette']] == list(PALETTE), loader
    assert cfg.model.bbox_head.num_classes == len(CLASSES)
