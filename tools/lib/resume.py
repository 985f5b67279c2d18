"""Resuming from a mid-epoch checkpoint continues at the next iteration.

mmengine 0.10.7's ``EpochBasedTrainLoop`` resumes by setting its epoch and
iteration counters from the checkpoint and then runs whole epochs: resumed
from a checkpoint saved by iteration (``CheckpointHook(by_epoch=False)``) in
the middle of an epoch, it starts that epoch over, so the epoch runs more
iterations than it has and sees its first batches twice. And the random
number generators restart from the config's seed, so data augmentation
(``RandomFlip``) draws differently from an uninterrupted run.

:class:`MidEpochResumeTrainLoop` (registered in mmdet's ``LOOPS``) is that
loop, except that the resumed epoch skips the batches the checkpoint had
already trained on: the sampler is the same (``DistSamplerSeedHook`` still
gives it the epoch, so its seed and order are mmengine's), and the skipped
batches are dropped from the batch sampler, not loaded. The loop also
registers :class:`RandomStateHook`, which saves the Python, numpy and torch
random states in every checkpoint (``checkpoint['rng_state']``; plain lists
and tensors, loadable weights-only) and restores them when the run resumes.

With ``num_workers=0`` a resumed run then repeats an uninterrupted one (the
losses agree to float rounding: tests/tools/test_resume_mid_epoch.py). With
data-loader workers the batches are the same, but the workers' random draws
(mmengine seeds each worker at the start of an epoch) differ for the rest of
the resumed epoch; a multi-process run restores no random state (a checkpoint
holds rank 0's only). ``tools/train.py`` uses this loop in place of
``EpochBasedTrainLoop`` (:func:`enable_mid_epoch_resume`), so the work dir's
dumped config names ``MidEpochResumeTrainLoop``: set
``train_cfg.type=EpochBasedTrainLoop`` to use that config with mmdet's tools.
``--cfg-options train_cfg.type=mmengine.EpochBasedTrainLoop`` keeps mmengine's
loop in tools/train.py.
"""
from __future__ import annotations

import itertools
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from mmdet.registry import LOOPS
from mmengine.config import Config
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader, IterableDataset, Sampler

from tools.lib.errors import UserError

#: The loop type :func:`enable_mid_epoch_resume` replaces (``mmengine.EpochBasedTrainLoop``,
#: with its scope, is left alone: a way to keep mmengine's loop).
REPLACED_LOOP = 'EpochBasedTrainLoop'


def enable_mid_epoch_resume(cfg: Config) -> bool:
    """Use :class:`MidEpochResumeTrainLoop` if the config trains with
    ``EpochBasedTrainLoop``; returns whether it does."""
    train_cfg = cfg.get('train_cfg')
    if not train_cfg or train_cfg.get('type') != REPLACED_LOOP:
        return False
    train_cfg['type'] = 'MidEpochResumeTrainLoop'
    return True


def random_state() -> Dict[str, Any]:
    """The Python, numpy and torch (CPU and CUDA) random states."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(), numpy=[name, keys.tolist(), pos, has_gauss, gauss],
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomStateHook(Hook):
    """Save the random states in checkpoints; keep the resumed one for the loop."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        #: (iteration, random state) of the last loaded checkpoint that had one.
        self.loaded: Optional[tuple] = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint['rng_state'] = random_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        meta = checkpoint.get('meta') or {}
        self.loaded = (meta.get('iter'), state) if state is not None else None


class SkipBatches(Sampler):
    """A batch sampler without the first ``skip`` batches of ``batch_sampler``."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    @property
    def sampler(self) -> Any:  # where DistSamplerSeedHook looks for set_epoch
        return self.batch_sampler.sampler

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def remaining_batches(loader: DataLoader, skip: int) -> DataLoader:
    """A one-epoch copy of ``loader`` without its first ``skip`` batches."""
    if loader.batch_sampler is None or isinstance(loader.dataset, IterableDataset):
        raise UserError('cannot resume in the middle of an epoch: the train dataloader has no '
                        'batch sampler to skip batches with; resume from an epoch checkpoint')
    kwargs: Dict[str, Any] = dict(
        batch_sampler=SkipBatches(loader.batch_sampler, skip), num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, generator=loader.generator,
        multiprocessing_context=loader.multiprocessing_context,
        pin_memory_device=loader.pin_memory_device, in_order=loader.in_order)
    if loader.num_workers > 0:
        kwargs['prefetch_factor'] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


@LOOPS.register_module()
class MidEpochResumeTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes a mid-epoch checkpoint at its next
    iteration, with the same batches and random state (see the module)."""

    def __init__(self, runner: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner, *args, **kwargs)
        self.random_state_hook = RandomStateHook()
        runner.register_hook(self.random_state_hook)
        self._resumed = False

    def _restore_random_state(self) -> None:
        """Once, after a resume: the random state the checkpoint was saved with."""
        loaded, self.random_state_hook.loaded = self.random_state_hook.loaded, None
        if (loaded is not None and loaded[0] == self._iter and self._iter > 0
                and get_world_size() == 1):
            set_random_state(loaded[1])

    def run_epoch(self) -> None:
        """Iterate one epoch, or what is left of it after a mid-epoch resume."""
        first_epoch, self._resumed = not self._resumed, True
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch if first_epoch else 0
        if done > per_epoch:
            raise UserError(
                f'cannot resume: the checkpoint is at iteration {self._iter} in epoch '
                f'{self._epoch + 1}, but an epoch now has {per_epoch} iterations (was the '
                f'batch size or the dataset changed?)')
        if done <= 0:
            if first_epoch:
                self._restore_random_state()
            super().run_epoch()
            return
        self.runner.call_hook('before_train_epoch')  # DistSamplerSeedHook: set_epoch
        self.runner.model.train()
        batches = iter(remaining_batches(self.dataloader, done))
        self._restore_random_state()  # as saved: after the epoch's loader iterator began
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
