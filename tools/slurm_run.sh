#!/usr/bin/env bash
# One run of a sweep as one task of a Slurm job array: train, then test.
#
#   sbatch --array=0-N --requeue --signal=B:USR1@SECONDS ... tools/slurm_run.sh RUN_FILE
#   bash tools/slurm_run.sh RUN_FILE INDEX      (outside Slurm: the same steps, by hand)
#
# tools/lib/sweep/slurm_jobs.py submits it and writes RUN_FILE (JSON; task INDEX, default
# SLURM_ARRAY_TASK_ID: the run's name, work dir, train and test commands as argv lists).
# sbatch keeps a copy of this script, so a task runs the version it was submitted with.
# The task:
#  - exits 0 at once if the run's marker (WORK_DIR/MARKER, the run file's "marker",
#    .sweep-run.json; JSON) says "tested" with the run file's marker fields; exits 2 if
#    it holds other fields (another run's settings: the submitter clears such a work dir
#    first);
#  - holds WORK_DIR/.slurm-run.lock (flock, where the file system has locks) while it
#    runs: a second task of the same run exits 1 at once, naming the job that holds it;
#    a work dir it cannot create or write in: exit 2, one line naming it;
#  - exports MASTER_PORT = 10000 + SLURM_JOB_ID % 20000 (slurm_jobs.master_port; the
#    next free port if that one is taken on this node), so two tasks on one node do
#    not both take 29500, and SRUN_CPUS_PER_TASK = SLURM_CPUS_PER_TASK (srun in a job
#    does not take --cpus-per-task from the allocation in some Slurm versions, 22.05
#    among them);
#  - marks "training", runs the train command (it resumes from the work dir's last
#    checkpoint), marks "trained", runs the test command with @LAST_CHECKPOINT@ replaced
#    by the path in WORK_DIR/last_checkpoint, marks "tested", exits 0. A command that
#    fails: its exit status, the marker left as it was, and the line "NAME: training (or
#    the test) exited with status N", which the sweep reads (slurm_jobs.log_end). A run already "trained" starts
#    at the test. Each command runs in the background and the shell waits for it, so
#    the signals below reach it in the middle of a command;
#  - USR1 (the time limit is near, --signal=B:USR1@SECONDS): TERM to the running
#    command, wait for it (STOP_GRACE s from the run file, then KILL), then
#    `scontrol requeue ARRAY_JOB_ID_TASK_ID` (the task, not the whole array), exit 0.
#    If this attempt made no progress (no new last_checkpoint, training not finished),
#    a requeue would only repeat it: it exits 3 and says so instead;
#  - TERM (Slurm requeues or pre-empts the job, or scancel): TERM to the running
#    command, wait for it, exit 143. Slurm requeues the job itself where it should;
#    this script does not call scontrol then, as a cancelled job must stay cancelled.
# Its output goes to sbatch's --output; WORK_DIR/slurm-<job>.out links to it.
# The run file is read with $POLYLOSS_PYTHON, else python3 (standard library only).
set -uo pipefail

PROG=slurm_run.sh
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $PROG RUN_FILE [INDEX]  (INDEX defaults to SLURM_ARRAY_TASK_ID)" >&2
  exit 2
fi
RUN_FILE=$1
INDEX=${2:-${SLURM_ARRAY_TASK_ID:-}}
if [ -z "$INDEX" ]; then
  echo "$PROG: error: no task index: give INDEX or run as a task of a job array" >&2
  exit 2
fi
PY=${POLYLOSS_PYTHON:-python3}

# The run file, markers and ports, in Python's standard library: helper COMMAND ARGS...
helper() {
  "$PY" - "$@" <<'PYTHON'
import json, os, shlex, socket, sys

def fail(message):
    print(f'slurm_run.sh: error: {message}', file=sys.stderr)
    sys.exit(2)

def task(run_file, index):
    try:
        with open(run_file) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        fail(f'cannot read the run file {run_file!r}: {error}')
    if not isinstance(data, dict) or data.get('version') != 1:
        fail(f'{run_file!r} is not a version 1 run file')
    entry = data.get('tasks', {}).get(index)
    if not isinstance(entry, dict):
        fail(f'the run file {run_file!r} has no task {index!r}')
    return data, entry

def marker(data, entry):
    path = os.path.join(entry['work_dir'], data.get('marker', '.sweep-run.json'))
    try:
        with open(path) as handle:
            content = json.load(handle)
    except (OSError, ValueError):
        content = {}
    return path, content if isinstance(content, dict) else {}

def array(name, words):
    return f'{name}=(' + ' '.join(shlex.quote(w) for w in words) + ')'

def last_checkpoint(work_dir):
    try:
        with open(os.path.join(work_dir, 'last_checkpoint')) as handle:
            return handle.read().strip()
    except OSError:
        return ''

command, args = sys.argv[1], sys.argv[2:]
if command == 'load':  # shell assignments for the task
    data, entry = task(*args)
    print(f'NAME={shlex.quote(entry["name"])}')
    print(f'WORK_DIR={shlex.quote(entry["work_dir"])}')
    print(f'STOP_GRACE={int(data.get("stop_grace", 30))}')
    print(array('TRAIN', entry['train']))
    for key, value in entry.get('env', {}).items():
        if not key.isidentifier():
            fail(f'run file {args[0]!r}: bad environment variable name {key!r}')
        print(f'export {key}={shlex.quote(value)}')
elif command == 'stage':  # tested, trained, training, '' or other:<why>
    data, entry = task(*args)
    path, content = marker(data, entry)
    expected = entry.get('marker_fields', {})
    wrong = sorted(k for k, v in expected.items() if content and content.get(k) != v)
    if wrong:
        print(f'other:{path} holds ' + ', '.join(f'{k}={content.get(k)!r}' for k in wrong)
              + ', the run file says ' + ', '.join(f'{k}={expected[k]!r}' for k in wrong))
    else:
        print(content.get('state', ''))
elif command == 'mark':  # RUN_FILE INDEX STATE JOB
    data, entry = task(*args[:2])
    path, _ = marker(data, entry)
    content = dict(entry.get('marker_fields', {}), state=args[2], slurm_job=args[3])
    with open(path + '.tmp', 'w') as handle:
        handle.write(json.dumps(content) + '\n')
    os.replace(path + '.tmp', path)
elif command == 'test':  # the test command, @LAST_CHECKPOINT@ filled in
    data, entry = task(*args)
    checkpoint = last_checkpoint(entry['work_dir'])
    words = entry['test']
    if any('@LAST_CHECKPOINT@' in w for w in words):
        if not checkpoint or not os.path.isfile(checkpoint):
            fail(f'{entry["work_dir"]}/last_checkpoint names no checkpoint file '
                 f'({checkpoint!r}): training left none to test')
        words = [w.replace('@LAST_CHECKPOINT@', checkpoint) for w in words]
    print(array('TEST', words))
elif command == 'stamp':  # WORK_DIR: what last_checkpoint names, and when it was written
    path = os.path.join(args[0], 'last_checkpoint')
    try:
        print(f'{os.stat(path).st_mtime_ns}:{last_checkpoint(args[0])}')
    except OSError:
        print('none')
elif command == 'port':  # JOB_ID: 10000 + id % 20000, or the next free port
    base, span = 10000, 20000
    start = int(args[0]) % span
    for step in range(span):
        port = base + (start + step) % span
        with socket.socket() as probe:
            try:
                probe.bind(('', port))
            except OSError:
                continue
        print(port)
        break
    else:
        fail(f'no free port in [{base}, {base + span})')
else:
    fail(f'unknown helper command {command!r}')
PYTHON
}

if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then
  JOB=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
else
  JOB=${SLURM_JOB_ID:-local}
fi
NAME="task $INDEX" WORK_DIR= START_STAMP= CHILD= TRAINED_NOW=0 DONE=0 STOP_GRACE=30
say() { echo "[$PROG $(date -u +%H:%M:%S)] $NAME ($JOB): $*"; }

# TERM to the running command; KILL after STOP_GRACE seconds.
stop_child() {
  [ -n "$CHILD" ] || return 0
  kill -TERM "$CHILD" 2>/dev/null
  local tenths=0
  while kill -0 "$CHILD" 2>/dev/null && [ "$tenths" -lt $(( STOP_GRACE * 10 )) ]; do
    sleep 0.1
    tenths=$(( tenths + 1 ))
  done
  if kill -0 "$CHILD" 2>/dev/null; then
    say "the command did not end ${STOP_GRACE} s after TERM: KILL"
    kill -KILL "$CHILD" 2>/dev/null
  fi
  wait "$CHILD" 2>/dev/null
  CHILD=
}

on_time_limit() {
  trap '' USR1 TERM  # our own requeue TERMs this shell too
  say "USR1: the time limit is near; stopping the command"
  stop_child
  if [ "$DONE" = 1 ]; then
    say "tested already: not requeued"
    exit 0
  fi
  if [ "$TRAINED_NOW" = 0 ] && { [ -z "$START_STAMP" ] ||
      [ "$(helper stamp "$WORK_DIR")" = "$START_STAMP" ]; }; then
    echo "$PROG: error: $NAME: no new checkpoint in this attempt, so a requeue would only" \
         "repeat it; give a longer --time or save checkpoints more often" >&2
    exit 3
  fi
  if scontrol requeue "$JOB"; then
    say "requeued; it resumes from the last checkpoint"
    exit 0
  fi
  echo "$PROG: error: $NAME: scontrol requeue $JOB failed; rerun the sweep to resume" >&2
  exit 1
}

on_term() {
  trap '' USR1 TERM
  say "TERM (requeue, pre-emption or cancel): stopping the command"
  stop_child
  exit 143
}
trap on_time_limit USR1
trap on_term TERM

load=$(helper load "$RUN_FILE" "$INDEX") || exit 2
eval "$load"

stage=$(helper stage "$RUN_FILE" "$INDEX") || exit 2
case $stage in
  tested) say "already tested: nothing to do"; exit 0 ;;
  other:*) echo "$PROG: error: $NAME: ${stage#other:}; the sweep clears such a work dir" \
             "before it submits the run" >&2; exit 2 ;;
esac

LOCK=$WORK_DIR/.slurm-run.lock
if ! mkdir -p "$WORK_DIR" || ! exec 9>>"$LOCK"; then
  echo "$PROG: error: $NAME: cannot write in the work dir $WORK_DIR (the line above says why)" >&2
  exit 2
fi
if command -v flock >/dev/null; then
  flock -n -E 75 9
  case $? in
    0) echo "$JOB on $(hostname -s), since $(date -u +%FT%TZ)" >"$LOCK" ;;
    75) echo "$PROG: error: $NAME: another job holds $LOCK ($(cat "$LOCK" 2>/dev/null))" >&2
        exit 1 ;;
    *) echo "$PROG: warning: $NAME: cannot lock $LOCK (file system without locks?);" \
            "going on without" >&2 ;;
  esac
else
  echo "$PROG: warning: no flock command: $LOCK is not locked" >&2
fi
if [ -n "${SLURM_JOB_ID:-}" ]; then
  out=$(readlink "/proc/$$/fd/1" 2>/dev/null || true)
  [ -f "$out" ] && ln -sfn "$out" "$WORK_DIR/slurm-$JOB.out"
fi

MASTER_PORT=$(helper port "${SLURM_JOB_ID:-0}") || exit 2
export MASTER_PORT
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
START_STAMP=$(helper stamp "$WORK_DIR")
say "attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 )) on $(hostname -s), MASTER_PORT=$MASTER_PORT," \
    "stage '${stage:-new}'"

# Run a command in the background and wait, so that the traps run while it does.
step() {
  "$@" &
  CHILD=$!
  wait "$CHILD"
  local status=$?
  CHILD=
  return "$status"
}

if [ "$stage" != trained ]; then
  helper mark "$RUN_FILE" "$INDEX" training "$JOB" || exit 2
  say "train: ${TRAIN[*]}"
  step "${TRAIN[@]}"
  status=$?
  if [ "$status" != 0 ]; then
    echo "$PROG: error: $NAME: training exited with status $status" >&2
    exit "$status"
  fi
  TRAINED_NOW=1
  helper mark "$RUN_FILE" "$INDEX" trained "$JOB" || exit 2
fi
test_load=$(helper test "$RUN_FILE" "$INDEX") || exit 2
eval "$test_load"
say "test: ${TEST[*]}"
step "${TEST[@]}"
status=$?
if [ "$status" != 0 ]; then
  echo "$PROG: error: $NAME: the test exited with status $status" >&2
  exit "$status"
fi
helper mark "$RUN_FILE" "$INDEX" tested "$JOB" || exit 2
DONE=1
say "tested"
exit 0
