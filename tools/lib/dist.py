"""Run mmengine's ``pytorch`` launcher (torchrun) on machines without CUDA.

mmengine 0.10 assumes one GPU per process under torchrun: ``init_dist`` calls
``torch.cuda.set_device(LOCAL_RANK)`` before joining the process group with
the config's backend (``nccl`` by default), and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]`` to DistributedDataParallel, which refuses a CPU
module. Neither works without a GPU, so multi-process training could not be
exercised (or used) on a CPU-only machine. :func:`setup_cpu_distributed`
joins the process group over ``gloo`` itself, with the config's other
``dist_cfg`` settings such as ``timeout`` (the Runner then skips its own
``init_dist``) and asks for DDP without device ids. With CUDA present it does
nothing: GPU runs take mmengine's usual path. A missing torchrun variable or
a bad ``dist_cfg`` entry is a :class:`~tools.lib.errors.UserError` (one line,
exit status 2, from the tools).
"""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from tools.lib.errors import UserError

_TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                 'MASTER_PORT')


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Prepare ``cfg`` (and the process group) for a CPU torchrun launch.

    Args:
        cfg: The full config; ``env_cfg.dist_cfg.backend`` and
            ``model_wrapper_cfg`` are updated in place.
        launcher: The ``--launcher`` value.

    Returns:
        True if the CPU path was taken, False when nothing was changed
        (another launcher, or CUDA is available).
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return False
    missing = [key for key in _TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise UserError(
            f'--launcher pytorch needs the torchrun environment, but '
            f'{", ".join(missing)} is not set; start the tool with torchrun '
            f'(tools/dist_train.sh) or use --launcher none')
    cfg.setdefault('env_cfg', {})
    cfg.env_cfg.setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(**process_group_kwargs(cfg.env_cfg.dist_cfg))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # a CPU module: DDP takes no device ids
    cfg.model_wrapper_cfg = wrapper
    return True


def process_group_kwargs(dist_cfg: dict) -> dict:
    """``init_process_group`` arguments from ``env_cfg.dist_cfg``, as mmengine's
    ``init_dist`` passes them: every entry but ``init_backend`` (only
    ``'torch'`` here), ``timeout`` in seconds as a timedelta, ``init_method``
    ``'env://'`` (torchrun's) unless given."""
    kwargs = dict(dist_cfg)
    init_backend = kwargs.pop('init_backend', 'torch')
    if init_backend != 'torch':
        raise UserError(f"env_cfg.dist_cfg.init_backend must be 'torch' for --launcher "
                        f'pytorch on a machine without CUDA, got {init_backend!r}')
    kwargs.setdefault('init_method', 'env://')
    timeout = kwargs.get('timeout')
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise UserError(f'env_cfg.dist_cfg.timeout must be a positive number of '
                            f'seconds, got {timeout!r}')
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    return kwargs


def destroy_process_group() -> None:
    """Leave the process group, if one was joined, before the process exits.

    Call it once the runner is no longer referenced. Otherwise gloo's work
    objects (held by DDP's reducer) outlive the interpreter, and one rank in
    a few aborted with "terminate called without an active exception" after
    a finished run (CPU torchrun, torch 2.14), failing the whole launch.
    Not for a failed run: its barrier would wait for ranks that never come.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        gc.collect()  # free the runner's DDP model and its pending work
        torch_dist.barrier()  # no rank leaves while another still talks
        torch_dist.destroy_process_group()
