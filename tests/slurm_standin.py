"""Stand-ins for tools/train.py and tools/test.py in the Slurm tests: seconds, not minutes.

    python slurm_standin.py train WORK_DIR ITERATIONS [--no-checkpoint]
    python slurm_standin.py test WORK_DIR CHECKPOINT
    python slurm_standin.py fail STATUS

``train`` counts ITERATIONS iterations of STANDIN_SECONDS (default 1) s each
into ``WORK_DIR/count``, resuming from the count there (as ``train.py --resume``
resumes from the last checkpoint). After each iteration it writes a
"checkpoint" ``iter_<count>.pth`` and names it in ``WORK_DIR/last_checkpoint``
(as mmengine does), unless ``--no-checkpoint``. It appends one JSON line per
event to ``WORK_DIR/events.jsonl``: ``start`` (the count it starts from,
SLURM_RESTART_COUNT, MASTER_PORT, job ids), ``iteration`` (each one finished),
``term`` (a SIGTERM, on which it exits 143) and ``end``. ``test`` writes
``WORK_DIR/result.json`` (the checkpoint it was given, the count, MASTER_PORT).
``fail`` exits with STATUS.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict


def event(work_dir: Path, kind: str, **fields: Any) -> None:
    """Append one event line to ``work_dir/events.jsonl``."""
    record: Dict[str, Any] = {'event': kind, 'time': time.time(), 'pid': os.getpid(), **fields}
    with open(work_dir / 'events.jsonl', 'a') as handle:
        handle.write(json.dumps(record) + '\n')


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(text)
    os.replace(temporary, path)


def train(work_dir: Path, iterations: int, checkpoint: bool) -> int:
    work_dir.mkdir(parents=True, exist_ok=True)
    count_file = work_dir / 'count'
    count = int(count_file.read_text()) if count_file.is_file() else 0

    def on_term(signum, frame):
        event(work_dir, 'term', count=count)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    event(work_dir, 'start', count=count, restart=int(os.environ.get('SLURM_RESTART_COUNT', 0)),
          port=os.environ.get('MASTER_PORT'), job=os.environ.get('SLURM_JOB_ID'),
          array_job=os.environ.get('SLURM_ARRAY_JOB_ID'),
          task=os.environ.get('SLURM_ARRAY_TASK_ID'))
    seconds = float(os.environ.get('STANDIN_SECONDS', '1'))
    while count < iterations:
        time.sleep(seconds)
        # An iteration's bookkeeping is not cut by a TERM (which waits for it), so
        # the count, the checkpoint and the 'iteration' event always agree.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        count += 1
        write(count_file, str(count))
        if checkpoint:
            path = work_dir / f'iter_{count}.pth'
            path.write_text(f'{count}\n')
            write(work_dir / 'last_checkpoint', str(path))
            old = work_dir / f'iter_{count - 1}.pth'
            if old.exists():
                old.unlink()
        event(work_dir, 'iteration', count=count)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    event(work_dir, 'end', count=count)
    return 0


def test(work_dir: Path, checkpoint: str) -> int:
    count = int((work_dir / 'count').read_text())
    write(work_dir / 'result.json', json.dumps({
        'checkpoint': checkpoint, 'count': count, 'port': os.environ.get('MASTER_PORT')}) + '\n')
    return 0


def main(argv) -> int:
    if argv[:1] == ['train'] and len(argv) in (3, 4):
        return train(Path(argv[1]), int(argv[2]), '--no-checkpoint' not in argv[3:])
    if argv[:1] == ['test'] and len(argv) == 3:
        return test(Path(argv[1]), argv[2])
    if argv[:1] == ['fail'] and len(argv) == 2:
        return int(argv[1])
    print(__doc__.split('\n\n')[1], file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
