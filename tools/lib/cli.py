"""The command line of tools/train.py and tools/test.py (mmdet's flags) and its config checks.
``--cfg-options`` is strict: a key must exist unless written ``+key=value`` (as in Hydra) or it
is a top-level key mmengine's Runner reads. What the user can fix is a :class:`UserError`."""
import argparse
import copy
import difflib
import inspect
import math
import os
import os.path as osp
import re
import tempfile
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Sequence

from mmengine.config import Config, ConfigDict, DictAction

from tools.lib.errors import UserError
from tools.lib.recipe import annotation_files
from tools.lib.sweep.settings import SEED_LIMIT

#: Top-level keys mmengine or mmdet read besides the Runner's arguments (set without ``+``).
EXTRA_TOP_LEVEL_KEYS = ('model_wrapper_cfg', 'compile', 'find_unused_parameters', 'runner_type',
                        'tta_model', 'tta_pipeline', 'custom_imports', 'activation_checkpointing',
                        'efficient_conv_bn_eval')


_SEPARATOR_SPACES = re.compile(r' *([\[\](),]) *')
_SPACE = '\0'  # stands for a kept space while DictAction parses (argv cannot hold it)


def _restore_spaces(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_SPACE, ' ')
    return type(value)(map(_restore_spaces, value)) if isinstance(value, (list, tuple)) \
        else value


def parse_cfg_value(text: str) -> Any:
    """``text`` as mmengine's ``DictAction`` parses a value (numbers, booleans, None, lists
    and tuples), except that spaces inside a value are kept: DictAction drops every space,
    so ``data_root=/data/my sets/trees 1/`` became ``/data/mysets/trees1/``. Spaces around
    the value, its brackets and commas are dropped, as before."""
    bare = text.strip('\'"').strip(' ')
    if bare[:1] in ('(', '[') and bare[-1:] in (')', ']') or ',' in bare:
        bare = _SEPARATOR_SPACES.sub(r'\1', bare)
    return _restore_spaces(DictAction._parse_iterable(bare.replace(' ', _SPACE)))


#: What --amp sets (tools/train.py; tools/sweep.py for every run), as mmdet's train.py.
AMP_OPTIONS = ('+optim_wrapper.type=AmpOptimWrapper', '+optim_wrapper.loss_scale=dynamic')


def option_key(word: str) -> str:
    """The config key a ``--cfg-options`` word sets: ``+a.b=1`` -> ``a.b``."""
    return word.split('=', 1)[0].lstrip('+')


def parse_cfg_options(words: Sequence[str]) -> dict[str, Any]:
    """``{KEY: VALUE}`` of ``words`` as mmengine's ``DictAction`` parses them (spaces in a
    value kept: :func:`parse_cfg_value`), checked."""
    options = {}
    for word in words:
        key, equals, value = word.partition('=')
        if not equals or key in ('', '+'):
            raise UserError(f'--cfg-options: expected KEY=VALUE, got {word!r}')
        try:
            options[key] = parse_cfg_value(value)
        except (AssertionError, ValueError) as error:  # DictAction's check of brackets
            raise UserError(f'--cfg-options: cannot parse {word!r}: {error}') from None
        except RecursionError:  # DictAction recurses without end on dict(a=1,b=2)
            raise UserError(f'--cfg-options: cannot parse {word!r}: a call with arguments, such '
                            'as dict(a=1,b=2), is not a value --cfg-options reads; set each key '
                            'instead (KEY.a=1 KEY.b=2)') from None
    return options


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
          weights: str) -> argparse.Namespace:
    """Add the flags both tools take, parse ``argv`` (--cfg-options into one dict) and
    set torch.compile's cache limit as mmdet's tools do."""
    parser.add_argument('--allow-partial-weights', action='store_true',
                        help=f'load {weights} even if it does not fit the model exactly')
    parser.add_argument('--work-dir', help="default: the config's work_dir, else "
                        'work_dirs/<config name>')
    parser.add_argument('--cfg-options', nargs='+', action='extend', metavar='KEY=VALUE',
                        type=lambda word: parse_cfg_options([word]).popitem(),
                        help='override config keys; a new key is written +KEY=VALUE')
    parser.add_argument('--launcher', choices=('none', 'pytorch', 'slurm', 'mpi'),
                        default='none', help='job launcher')
    args = parser.parse_args(argv)
    args.cfg_options = dict(args.cfg_options) if args.cfg_options else None
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    setup_cache_size_limit_of_dynamo()
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    """``args.config`` with --cfg-options, --launcher and --work-dir applied as mmdet, checked."""
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        apply_cfg_options(cfg, args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    dump = osp.join(cfg.work_dir, osp.basename(args.config))
    if osp.exists(dump) and osp.samefile(dump, args.config):
        raise UserError(f'{"--work-dir" if args.work_dir is not None else "work_dir"} '
                        f'{cfg.work_dir!r} is the config\'s own folder: mmengine saves its copy '
                        f'of the config there under the same name, over {args.config!r}; '
                        'choose another work dir')
    check_run_settings(cfg)
    return cfg


def check_run_settings(cfg: Config) -> None:
    """The seed, and every number of the schedule and optimizer finite: what torch or
    mmengine would take silently or fail on deep inside (the sweep checks them up front)."""
    randomness = cfg.get('randomness')
    if randomness is not None and not isinstance(randomness, Mapping):
        raise UserError(f'randomness must be a dict such as dict(seed=0), got {randomness!r}')
    seed = (randomness or {}).get('seed')
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < SEED_LIMIT):
        raise UserError(f'randomness.seed must be an integer from 0 to {SEED_LIMIT - 1} '
                        f'(2^32 - 1), got {seed!r}')
    # torch trains on lr=nan; mmengine fails on max_epochs=nan with a traceback.
    for key in ('train_cfg', 'optim_wrapper', 'param_scheduler', 'auto_scale_lr'):
        check_finite(cfg.get(key), key)


def read_config(config: str) -> Config:
    """``Config.fromfile``; a missing or broken config is a :class:`UserError`."""
    if not osp.isfile(config):
        raise UserError(f'config: no such file: {config!r}')
    try:
        return Config.fromfile(config)
    except SyntaxError as error:
        code = (error.text or '').strip()
        raise UserError(f'config {config}: syntax error at line {error.lineno}: {error.msg}'
                        + (f': {code}' if code else '')) from error
    except Exception as error:  # running a config is running the user's code
        raise UserError(f'config {config} cannot be read: {type(error).__name__}: '
                        f'{error}') from error


def _message(error: Exception) -> str:
    """``str(error)``, without the quotes ``KeyError`` puts around its message."""
    return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def apply_cfg_options(cfg: Config, options: Mapping[str, Any]) -> None:
    """Merge --cfg-options into ``cfg``: a ``+key`` may be new, any other must exist."""
    for key in options:
        if not key.startswith('+'):
            check_option_key(cfg, key)
    try:
        cfg.merge_from_dict({key.removeprefix('+'): value for key, value in options.items()})
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise UserError(f'--cfg-options: {_message(error)}') from error


def check_option_key(cfg: Config, key: str) -> None:
    """Each part of ``key`` exists in ``cfg`` (a number indexes a list), or it is a Runner key."""
    node: Any = cfg
    parts = key.split('.')
    for depth, part in enumerate(parts):
        path = '.'.join(parts[:depth]) or 'the config'
        if isinstance(node, (list, tuple)):
            if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
                raise UserError(f'--cfg-options {key}: {path} is a list of {len(node)}, '
                                f'{part!r} is not an index into it (0 to {len(node) - 1})')
            node = node[int(part)]
        elif not isinstance(node, (Mapping, Config)):
            raise UserError(f'--cfg-options {key}: {path} is {node!r}, which has no keys')
        elif part in node:
            node = node[part]
        else:
            from mmengine.runner import Runner
            runner_keys = {*inspect.signature(Runner.__init__).parameters, *EXTRA_TOP_LEVEL_KEYS}
            if depth == 0 and part in runner_keys - {'self', 'cfg'}:
                return
            names = [str(name) for name in node.keys()]
            close = difflib.get_close_matches(part, names, n=1)
            hint = (f'did you mean {".".join([*parts[:depth], close[0]])}?' if close else
                    f'{path} has {", ".join(names[:12])}' + (', ...' if len(names) > 12 else ''))
            raise UserError(f'--cfg-options {key}: no key {part!r} in {path} ({hint}); to add '
                            f'a new key, write +{key}=...')


def check_finite(value: Any, key: str) -> None:
    """Every float in ``value`` (the config section ``key``) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f'{key}={value!r}: expected a finite number')
    items = value.items() if isinstance(value, Mapping) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for name, each in items:
        check_finite(each, f'{key}.{name}')


def apply_train_flags(cfg: Config, args: argparse.Namespace) -> None:
    """--amp, --auto-scale-lr and --resume ('auto': the latest checkpoint in the work dir)."""
    if args.amp:
        if 'optim_wrapper' not in cfg:
            raise UserError('--amp: the config has no optim_wrapper to switch to AmpOptimWrapper')
        apply_cfg_options(cfg, parse_cfg_options(AMP_OPTIONS))
    check_amp_device(cfg, '--amp' if args.amp else "optim_wrapper.type='AmpOptimWrapper'")
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'base_batch_size' not in scale:
            raise UserError('--auto-scale-lr: the config needs auto_scale_lr = dict(enable='
                            'False, base_batch_size=<total batch the lr was tuned for>), got '
                            f'auto_scale_lr={scale!r}')
        cfg.auto_scale_lr.enable = True
    if args.resume is not None:
        if args.resume != 'auto':
            check_checkpoint(args.resume, '--resume')
        cfg.resume, cfg.load_from = True, None if args.resume == 'auto' else args.resume


def check_amp_device(cfg: Config, what: str) -> None:
    """Mixed precision (mmengine's ``AmpOptimWrapper``, which asserts a CUDA, NPU or MLU
    device when the runner builds it, after the work dir is set up) where there is one."""
    wrapper = cfg.get('optim_wrapper')
    kind = wrapper.get('type') if isinstance(wrapper, Mapping) else None
    if getattr(kind, '__name__', kind) == 'AmpOptimWrapper':
        require_amp_device(what)


def require_amp_device(what: str) -> None:
    """``what`` asks for mixed precision: a one-line error on a machine without a device
    that AmpOptimWrapper trains on."""
    from mmengine.device import get_device
    device = get_device()
    if device in ('cpu', 'mps'):
        raise UserError(f'{what}: mixed precision (AmpOptimWrapper) trains on a CUDA, NPU or '
                        f'MLU device, and this machine has none (mmengine finds {device!r}); '
                        'train without it')


def check_checkpoint(path: str, what: str) -> None:
    """A local checkpoint exists; URLs are left to mmengine's loader, as in mmdet."""
    if '://' not in path and not osp.isfile(path):
        raise UserError(f'{what}: no such checkpoint: {path!r}')


def apply_test_flags(cfg: Config, args: argparse.Namespace) -> None:
    """--show / --show-dir (under ``<work_dir>/<timestamp>/``), and --tta: the config's
    tta_model and tta_pipeline, else mmdet's default (flip, merge)."""
    if args.show or args.show_dir:
        hook = cfg.get('default_hooks', {}).get('visualization')
        if hook is None:
            raise UserError("--show/--show-dir need default_hooks.visualization = "
                            "dict(type='DetVisualizationHook') in the config")
        hook['draw'] = True
        if args.show:
            hook.update(show=True, wait_time=args.wait_time)
        if args.show_dir:
            check_show_dir(cfg, args.show_dir)
            hook['test_out_dir'] = args.show_dir
    if not args.tta:
        return
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using DetTTAModel '
                      '(NMS at IoU 0.5, 100 boxes per image)', stacklevel=2)
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; using its test pipeline '
                      'with and without a horizontal flip', stacklevel=2)
        dataset = innermost_dataset(cfg, 'test_dataloader')
        *steps, pack = copy.deepcopy(list(dataset['pipeline']))
        if 'meta_keys' in pack:  # the merge needs to know which pass was flipped
            pack['meta_keys'] = tuple(dict.fromkeys([*pack['meta_keys'], 'flip', 'flip_direction']))
        cfg.tta_pipeline = [*steps, dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)], [pack]])]
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def innermost_dataset(cfg: Config, loader: str) -> Any:
    """``loader``'s dataset inside its wrappers (ClassBalancedDataset, RepeatDataset, ...)."""
    dataset = (cfg.get(loader) or {}).get('dataset')
    while isinstance(dataset, Mapping) and 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def check_show_dir(cfg: Config, show_dir: str) -> None:
    """mmdet draws the predictions into ``<work_dir>/<timestamp>/<show_dir>`` (an absolute
    one as it is), each named as its image: never into the test set's own folder."""
    dataset = innermost_dataset(cfg, 'test_dataloader')
    data_root = dataset.get('data_root') if isinstance(dataset, Mapping) else None
    if not isinstance(data_root, str) or not data_root or '://' in data_root:
        return
    drawn = osp.realpath(osp.join(cfg.get('work_dir') or '.', 'timestamp', show_dir))
    root = osp.realpath(data_root)
    if drawn == root or drawn.startswith(root + osp.sep):
        raise UserError(f'--show-dir {show_dir!r}: the images would be drawn into {drawn}, '
                        f'inside the test set\'s data_root {data_root!r}, over or beside its '
                        'own images; choose a folder outside it')


def build_runner(cfg: Config) -> Any:
    """A Runner, or the config's ``runner_type`` from mmdet's registry."""
    from mmdet.registry import RUNNERS
    from mmengine.runner import Runner
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


@contextmanager
def user_errors(what: str) -> Iterator[None]:
    """What a config or data file makes mmengine, mmdet or torch raise: a :class:`UserError`."""
    try:
        yield
    except (AssertionError, AttributeError, IndexError, KeyError, OSError, TypeError,
            ValueError) as error:
        message = _message(error)
        if message == 'need at least one array to concatenate':  # mmdet does not say why
            message += (' (the dataset has no images to use: none listed, or, with '
                        'filter_empty_gt, none with annotations)')
        raise UserError(f'{what}: {type(error).__name__}: {message}') from error


def prepare_runner(cfg: Config, loops: Sequence[str]) -> Any:
    """The runner and its ``loops``, built before any long work; each failure one line."""
    from tools.lib.dist import setup_cpu_distributed  # torch: not for tools/sweep.py's import
    setup_cpu_distributed(cfg, cfg.launcher)
    check_input_files(cfg, loops)
    check_writable(cfg.work_dir, 'the work dir', directory=True)
    with user_errors('the config (building the runner: model, hooks, optimizer)'):
        runner = build_runner(cfg)
    check_sigmoid_classifiers(runner.model)
    for loop in loops:
        files = ', '.join(dict.fromkeys(path for _, path in
                                        annotation_files(cfg, f'{loop}_dataloader')))
        with user_errors(f'{loop}_cfg / {loop}_dataloader'
                         + (f' (annotations {files})' if files else '')):
            built = getattr(runner, f'{loop}_loop')
        if loop == 'train' and getattr(built, 'max_iters', 1) < 1:
            key = 'max_epochs' if 'max_epochs' in cfg.train_cfg else 'max_iters'
            raise UserError(f'train_cfg.{key}={cfg.train_cfg.get(key)!r} leaves nothing to '
                            f'train ({built.max_iters} iterations): it must be >= 1')
    return runner


def check_sigmoid_classifiers(model: Any) -> None:
    """No head with a Poly focal loss gives its classifier one output more than its classes:
    mmdet's anchor heads read ``use_sigmoid`` from the loss config (default False), not from
    the loss (True), so a config without it adds a background class the loss trains as real.
    DETR-family heads read the loss itself and are fine without it."""
    from mmdet_polyloss.losses import PolyNFocalLoss
    for name, module in model.named_modules():
        outputs, classes = (getattr(module, key, None) for key in ('cls_out_channels',
                                                                    'num_classes'))
        loss = getattr(module, 'loss_cls', None)
        if isinstance(loss, PolyNFocalLoss) and isinstance(classes, int) and \
                outputs == classes + 1:
            # (a DDP model's modules are under 'module.')
            where = '.'.join(filter(None, ('model', name.removeprefix('module.'), 'loss_cls')))
            raise UserError(f'{where}: {type(loss).__name__} needs use_sigmoid=True in the '
                            f'config: the head read it from there (default False) and built '
                            f'{outputs} class outputs for num_classes={classes}, a background '
                            'class the loss would train as real')


def check_writable(path: str, what: str, directory: bool = False) -> None:
    """``path`` (a directory, or a file in one) can be written; a missing folder is made."""
    try:
        if not directory and osp.isdir(path):
            raise IsADirectoryError(f'{path!r} is a directory')
        folder = path if directory else osp.dirname(osp.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UserError(f'{what} {path!r} cannot be written: {error}') from error


#: Part of a default path -> the tool that makes the file (for the missing-file hint).
MAKERS = {'polyloss_shapes': 'tools/make_demo_data.py', 'polyloss_trees': 'tools/make_tree_data.py',
          'mobilenet_v2_imagenet': 'tools/model_converters/mobilenet_v2_imagenet.py'}


def check_local_file(where: str, path: str) -> None:
    """A local file a config names exists (not an error deep in mmdet or mmengine)."""
    if path and '://' not in path and not osp.isfile(path):
        hint = ''.join(f'; python {tool} makes it' for part, tool in MAKERS.items()
                       if part in path)
        raise UserError(f'{where}: no such file: {path!r} (relative paths are from '
                        f'{os.getcwd()!r}){hint}')


def check_input_files(cfg: Config, loops: Sequence[str]) -> None:
    """The local annotation files the ``loops``' dataloaders read exist, and for a training
    the pretrained weights it initialises the model from (before its first step)."""
    for loop in loops:
        for where, path in annotation_files(cfg, f'{loop}_dataloader'):
            check_local_file(where, path)
    if 'train' in loops:
        for where, path in pretrained_files(cfg.get('model')):
            check_local_file(where, path)


def pretrained_files(node: Any, where: str = 'model') -> Iterator[tuple[str, str]]:
    """(config key, path) of each ``init_cfg=dict(type='Pretrained', checkpoint=...)`` under
    ``node``, the checkpoints a training loads before its first step."""
    if isinstance(node, Mapping):
        init = node.get('init_cfg')
        for index, each in enumerate(init if isinstance(init, (list, tuple)) else [init]):
            if isinstance(each, Mapping) and each.get('type') == 'Pretrained' and \
                    isinstance(each.get('checkpoint'), str):
                key = f'{where}.init_cfg' + (f'.{index}' if isinstance(init, (list, tuple))
                                             else '')
                yield f'{key}.checkpoint', each['checkpoint']
        for key, value in node.items():
            if key != 'init_cfg':
                yield from pretrained_files(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from pretrained_files(value, f'{where}.{index}')


def check_pickle_path(out: Optional[str]) -> None:
    """--out must name a .pkl / .pickle file."""
    if out is not None and not out.endswith(('.pkl', '.pickle')):
        raise UserError(f'--out must end with .pkl or .pickle, got {out!r}')
