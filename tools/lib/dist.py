"""mmengine's ``pytorch`` launcher (torchrun) without CUDA: mmengine 0.10's ``init_dist`` sets a
CUDA device before joining, and its Runner gives DDP ``device_ids=[LOCAL_RANK]``, which a CPU
module refuses; so the tools join over gloo themselves (the Runner then skips ``init_dist``)."""
import datetime
import gc
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from tools.lib.errors import UserError

_TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """For ``--launcher pytorch`` without CUDA: join over gloo, set ``cfg`` up, return True."""
    if launcher != 'pytorch' or torch.cuda.is_available():
        return False
    missing = [key for key in _TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise UserError(f'--launcher pytorch needs the torchrun environment, but '
                        f'{", ".join(missing)} is not set; start the tool with torchrun '
                        '(tools/dist_train.sh) or use --launcher none')
    cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo'})
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(**process_group_kwargs(cfg.env_cfg.dist_cfg))
    # mmengine's DDP defaults (it applies them only without a model_wrapper_cfg); no device ids.
    cfg.model_wrapper_cfg = {
        'broadcast_buffers': False,
        'find_unused_parameters': cfg.get('find_unused_parameters', False),
        **(cfg.get('model_wrapper_cfg') or {}), 'device_ids': None}
    return True


def process_group_kwargs(dist_cfg: dict) -> dict:
    """``init_process_group``'s arguments from ``env_cfg.dist_cfg``, as mmengine's ``init_dist``."""
    kwargs = {'init_method': 'env://', **dist_cfg}
    init_backend = kwargs.pop('init_backend', 'torch')
    if init_backend != 'torch':
        raise UserError(f"env_cfg.dist_cfg.init_backend must be 'torch' for --launcher "
                        f'pytorch on a machine without CUDA, got {init_backend!r}')
    if (timeout := kwargs.get('timeout')) is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise UserError(f'env_cfg.dist_cfg.timeout must be a positive number of '
                            f'seconds, got {timeout!r}')
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    return kwargs


def destroy_process_group() -> None:
    """After a finished run, leave the process group (else one CPU torchrun rank in a few
    aborted at exit, torch 2.14); never after a failure: the barrier would wait forever."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        gc.collect()  # free the runner's DDP model and its pending gloo work
        torch_dist.barrier()  # no rank leaves while another still talks
        torch_dist.destroy_process_group()
