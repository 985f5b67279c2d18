"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd on
localhost, in a temporary folder, on free ports, without systemd or cgroups.

    cluster = SlurmCluster.start()      # or ClusterUnavailable, with the reason
    subprocess.run(['sbatch', ...], env=cluster.env)
    cluster.stop()                      # cancels every job, ends the daemons by PID

In tests, :func:`start_for_tests` (the ``slurm_cluster`` fixture in conftest.py)
skips with the reason where the cluster cannot run, and fails instead under
``CI=true``.

:func:`ensure_packages` installs Debian's ``slurm-wlm`` and ``munge`` where they
are missing and the user is root (``apt-get update`` once, then ``apt-get
install``). The settings are ones measured to work with Debian 12's Slurm
22.05 without systemd or cgroups: a scheduler pass every 1-2 s,
``cred_expire=10`` (a requeued job starts again after about 12 s),
``JobRequeue=1``, ``MinJobAge=3600`` (finished jobs stay in ``squeue -t all``;
there is no accounting database), ``kill_invalid_depend``. The node has
``nproc`` CPUs and no GPUs. Daemons, state and logs live in a temporary folder
that :meth:`SlurmCluster.stop` removes.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

PACKAGES = ('slurm-wlm', 'munge')
#: Programs the cluster needs; any missing one means the packages are installed.
PROGRAMS = ('slurmctld', 'slurmd', 'munged', 'mungekey', 'sbatch', 'squeue', 'scontrol',
            'scancel', 'sinfo')
#: Only one ``apt-get update`` per test session.
_APT_UPDATED = False


class ClusterUnavailable(RuntimeError):
    """The cluster cannot run here; the message says why (a test skips with it)."""


def _which(program: str) -> Optional[str]:
    """``program`` on PATH, or in the sbin folders a non-login root shell may lack."""
    found = shutil.which(program)
    if found:
        return found
    for folder in ('/usr/sbin', '/sbin', '/usr/local/sbin'):
        candidate = Path(folder, program)
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_programs() -> List[str]:
    """The programs of :data:`PROGRAMS` that are not installed."""
    return [p for p in PROGRAMS if _which(p) is None]


def ensure_packages(timeout: float = 600) -> None:
    """Install ``slurm-wlm`` and ``munge`` if a program is missing; raise
    :class:`ClusterUnavailable` where that cannot be done (not root, no apt-get,
    the install fails)."""
    global _APT_UPDATED
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(f'Slurm is not installed ({", ".join(missing)} missing) and '
                                 f'installing {" and ".join(PACKAGES)} needs root')
    if shutil.which('apt-get') is None:
        raise ClusterUnavailable(f'Slurm is not installed ({", ".join(missing)} missing) and '
                                 'there is no apt-get to install it')
    # Another process may hold the package lock (an install of its own): wait for it.
    apt = ['apt-get', '-o', 'DPkg::Lock::Timeout=300', '-q']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    steps = ([] if _APT_UPDATED else [[*apt, 'update']]) + [
        [*apt, 'install', '-y', '--no-install-recommends', *PACKAGES]]
    for step in steps:
        try:
            result = subprocess.run(step, capture_output=True, text=True, env=env,
                                    timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise ClusterUnavailable(f'{" ".join(step)} took over {timeout:.0f} s') from error
        if result.returncode != 0:
            tail = ' '.join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise ClusterUnavailable(f'{" ".join(step)} failed (status {result.returncode}): '
                                     f'{tail}')
        if step[-1] == 'update':
            _APT_UPDATED = True
    still = missing_programs()
    if still:
        raise ClusterUnavailable(f'{" ".join(PACKAGES)} installed, yet {", ".join(still)} '
                                 'is still missing')


def free_ports(count: int) -> List[int]:
    """``count`` distinct TCP ports that are free on localhost now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(('', 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def memory_mb() -> int:
    """The machine's memory in MB (``/proc/meminfo``)."""
    with open('/proc/meminfo') as meminfo:
        for line in meminfo:
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) // 1024
    raise ClusterUnavailable('no MemTotal in /proc/meminfo')


def slurm_conf(folder: Path, host: str, ports: Sequence[int], cpus: int, memory: int,
               munge_socket: Path, user: str) -> str:
    """The text of ``slurm.conf`` for a one-node cluster in ``folder``."""
    return '\n'.join([
        'ClusterName=polyloss-test',
        f'SlurmctldHost={host}(127.0.0.1)',
        f'SlurmctldPort={ports[0]}',
        f'SlurmdPort={ports[1]}',
        f'SlurmUser={user}',
        f'SlurmdUser={user}',
        'AuthType=auth/munge',
        'CredType=cred/munge',
        f'AuthInfo=socket={munge_socket},cred_expire=10',
        f'StateSaveLocation={folder}/state',
        f'SlurmdSpoolDir={folder}/spool/%n',
        f'SlurmctldPidFile={folder}/run/slurmctld.pid',
        f'SlurmdPidFile={folder}/run/slurmd.pid',
        f'SlurmctldLogFile={folder}/log/slurmctld.log',
        f'SlurmdLogFile={folder}/log/slurmd.log',
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'MpiDefault=none',
        'SwitchType=switch/none',
        'MailProg=/bin/true',
        'SchedulerType=sched/backfill',
        'SchedulerParameters=bf_interval=1,sched_interval=2',
        'DependencyParameters=kill_invalid_depend',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU',
        'ReturnToService=2',
        'JobRequeue=1',
        'MinJobAge=3600',
        'KillWait=5',
        'InactiveLimit=0',
        f'NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN',
        f'PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP',
        '',
    ])


@dataclass
class SlurmCluster:
    """A running single-node cluster; :attr:`env` is the environment for its
    client commands (``sbatch``, ``squeue``, ``scontrol``, ...)."""
    folder: Path
    env: Dict[str, str]
    cpus: int
    partition: str = 'debug'
    processes: Dict[str, subprocess.Popen] = field(default_factory=dict)
    owns_folder: bool = True

    @classmethod
    def start(cls, folder: Optional[Path] = None, timeout: float = 60) -> 'SlurmCluster':
        """Install what is missing (:func:`ensure_packages`), start the daemons and
        wait until the node is idle; :class:`ClusterUnavailable` if that fails."""
        ensure_packages()
        owns = folder is None
        # Short paths: munge's socket name must fit a Unix socket address.
        folder = Path(tempfile.mkdtemp(prefix='slurm-')) if folder is None else Path(folder)
        user = getpass.getuser()
        host = socket.gethostname().split('.')[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'SBATCH_',
                                                                         'SRUN_', 'SQUEUE_'))}
        env['SLURM_CONF'] = str(folder / 'slurm.conf')
        env['PATH'] = os.pathsep.join([env.get('PATH', ''), '/usr/sbin', '/sbin'])
        cluster = cls(folder, env, os.cpu_count() or 1, owns_folder=owns)
        try:
            cluster._start_daemons(user, host, timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_daemons(self, user: str, host: str, timeout: float) -> None:
        for sub in ('state', 'spool', 'run', 'log', 'munge', 'munge-socket'):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # munged's key, log, seed and PID in a folder of its own (0700); its socket in
        # one every user can enter (munged refuses otherwise).
        munge, sockets = self.folder / 'munge', self.folder / 'munge-socket'
        key = munge / 'munge.key'
        run_as = 'munge' if os.geteuid() == 0 else None
        subprocess.run([_which('mungekey'), '--create', f'--keyfile={key}'], check=True,
                       capture_output=True)
        for path in (munge, sockets, key):
            if run_as:
                shutil.chown(path, run_as, run_as)
            path.chmod({munge: 0o700, sockets: 0o755, key: 0o600}[path])
        self.folder.chmod(0o755)
        socket_path = sockets / 'munge.socket'
        self._spawn('munged', [
            _which('munged'), '--foreground', f'--socket={socket_path}', f'--key-file={key}',
            f'--log-file={munge}/munged.log', f'--pid-file={munge}/munged.pid',
            f'--seed-file={munge}/munged.seed'], user=run_as)
        self._wait_for(lambda: socket_path.exists(), 'munged to open its socket', timeout)
        conf = slurm_conf(self.folder, host, free_ports(2), self.cpus, max(
            256, memory_mb() * 9 // 10), socket_path, user)
        (self.folder / 'slurm.conf').write_text(conf)
        conf_arg = ['-f', str(self.folder / 'slurm.conf')]
        self._spawn('slurmctld', [_which('slurmctld'), '-D', *conf_arg])
        self._spawn('slurmd', [_which('slurmd'), '-D', *conf_arg])
        self._wait_for(lambda: self.node_state() == 'idle', 'the node to be idle', timeout)

    def _spawn(self, name: str, argv: List[Optional[str]], user: Optional[str] = None) -> None:
        log = open(self.folder / 'log' / f'{name}.out', 'ab')
        try:
            self.processes[name] = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env=self.env, user=user,
                group=user)
        finally:
            log.close()

    def _wait_for(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterUnavailable(f'{name} exited with status {process.returncode} '
                                             f'while waiting for {what}: {self.log_tail(name)}')
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f'waited {timeout:.0f} s for {what}: '
                                         f'{self.log_tail("slurmd")}')
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last ``lines`` lines of a daemon's log (``slurmctld``, ``slurmd``,
        ``munged``), as one line."""
        paths = [self.folder / 'log' / f'{name}.log', self.folder / 'log' / f'{name}.out',
                 self.folder / 'munge' / f'{name}.log']
        text = ''.join(p.read_text(errors='replace') for p in paths if p.is_file())
        return ' | '.join(text.strip().splitlines()[-lines:]) or f'(no {name} log)'

    def command(self, *args: str, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                                env=self.env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f'{" ".join(args)} exited with status {result.returncode}: '
                               f'{result.stderr.strip()}')
        return result

    def node_state(self) -> str:
        """``sinfo``'s state of the node (``idle``, ``mixed``, ``allocated``, ...)."""
        if 'slurmctld' not in self.processes:
            return ''
        result = self.command('sinfo', '-h', '-o', '%T', check=False, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else ''

    def active_jobs(self) -> List[str]:
        """Ids of the jobs not yet finished (``squeue``'s default states)."""
        result = self.command('squeue', '-h', '-r', '-o', '%i', timeout=10)
        return result.stdout.split()

    def stop(self, timeout: float = 60) -> None:
        """Cancel every job, wait for an empty queue, end slurmd, slurmctld and
        munged by their PIDs (TERM, then KILL after 15 s each), remove the folder."""
        if 'slurmctld' in self.processes and self.processes['slurmctld'].poll() is None:
            try:
                self.command('scancel', f'--user={getpass.getuser()}', check=False)
                deadline = time.monotonic() + timeout
                while self.active_jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass  # the daemons end below all the same
        for name in ('slurmd', 'slurmctld', 'munged'):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_for_tests(environ: Optional[Dict[str, str]] = None) -> SlurmCluster:
    """:meth:`SlurmCluster.start`; where the cluster cannot run, skip the test
    with the reason, or fail it when ``CI=true`` (CI must run these tests)."""
    import pytest
    environ = os.environ if environ is None else environ
    try:
        return SlurmCluster.start()
    except ClusterUnavailable as error:
        if environ.get('CI') == 'true':
            pytest.fail(f'CI=true, and the Slurm test cluster did not start: {error}')
        pytest.skip(f'no Slurm test cluster: {error}')


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.5):
    """Poll ``condition`` until it is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'waited {timeout:.0f} s for {what}')
        time.sleep(interval)
