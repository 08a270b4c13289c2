"""Finding the supervisor, and starting one when none is running.

The running supervisor holds an exclusive lock on ``$CORRAL_HOME/supervisor.pid``
for its whole life, so "is one running?" is a lock test, not a guess from a
timeout. Clients that race to start one serialize on ``start.lock``: the
first starts it, the others find it running.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from corral.configs.settings import Settings
from corral.supervisor.errors import SupervisorUnreachable
from corral.supervisor.home import prepare_home
from corral.supervisor.logs import get_logger

log = get_logger()

START_TIMEOUT_S = 30.0


def supervisor_pid(settings: Settings) -> int | None:
    """The pid of the supervisor running for this home, or None."""
    try:
        fd = os.open(settings.pid_lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a supervisor is alive
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def ensure_supervisor(settings: Settings, timeout: float = START_TIMEOUT_S, preload: dict | None = None) -> int:
    """The running supervisor's pid, starting one (detached) if needed.

    ``preload`` (the model fields of a load request) lets a new supervisor
    start that model's worker at once, while this client is still getting
    ready to ask for it: a cold `corral run` overlaps the two starts.
    """
    pid = supervisor_pid(settings)
    if pid is not None:
        return pid
    prepare_home(settings)
    with open(settings.start_lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held only while starting: brief
        pid = supervisor_pid(settings)
        if pid is not None:
            return pid  # another client won the race
        return _start(settings, timeout, preload)


def _start(settings: Settings, timeout: float, preload: dict | None = None) -> int:
    log_path = settings.supervisor_log
    log.debug("starting supervisor", home=str(settings.home), log=str(log_path))
    # The supervisor writes why it could not start to this pipe: its log may
    # be unwritable (a full disk) and would then say nothing.
    reason_r, reason_w = os.pipe()
    try:
        return _start_with_pipe(settings, timeout, preload, log_path, reason_r, reason_w)
    finally:
        os.close(reason_r)


def _start_reason(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4000).decode(errors="replace").strip()
    except OSError:
        return ""


def _start_with_pipe(settings: Settings, timeout: float, preload: dict | None, log_path: Path,
                     reason_r: int, reason_w: int) -> int:
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "corral.supervisor", *(["--preload"] if preload else [])],
                # the preload goes on stdin: on the command line any local user could read it
                stdin=subprocess.PIPE if preload else subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                # Detached: its own session, so it outlives this command and no
                # Ctrl-C in this terminal reaches it.
                start_new_session=True,
                close_fds=True,
                pass_fds=(reason_w,),
                env={**os.environ, "CORRAL_HOME": str(settings.home), "CORRAL_START_FD": str(reason_w)},
            )
        finally:
            os.close(reason_w)  # the child holds its own copy
    if preload:
        try:
            proc.stdin.write(json.dumps(preload).encode())
            proc.stdin.close()
        except OSError:
            pass  # it exited at once; the wait below says why
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            reason = _start_reason(reason_r)
            if reason:
                raise SupervisorUnreachable(f"the corral supervisor cannot start: {reason}")
            raise SupervisorUnreachable(
                f"the corral supervisor exited at start ({_log_tail(log_path) or f'code {proc.returncode}'}); see {log_path}"
            )
        pid = supervisor_pid(settings)
        if pid == proc.pid and settings.socket_path.exists():
            log.debug("supervisor started", pid=pid)
            return pid
        time.sleep(0.01)
    proc.kill()
    raise SupervisorUnreachable(f"the corral supervisor did not start within {timeout:.0f} s; see {log_path}")
