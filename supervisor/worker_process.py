"""How a worker process is launched, watched and stopped.

Death is watched, not guessed: each worker has a pidfd that sits in the
supervisor's poller beside the sockets, so "died while loading" and "ready
arrived" are seen by the same loop, the moment they happen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from corral.configs.catalog import ModelSpec
from corral.configs.settings import Settings
from corral.supervisor.logs import get_logger

log = get_logger()

# Rungs of the stop ladder.
RUNNING, ASKED, TERMINATED, KILLED = range(4)


def worker_log_path(settings: Settings, model: str) -> Path:
    """One log per model name, appended to by each of its workers."""
    from corral.configs.catalog import canonical_name

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", canonical_name(model)).strip("_")[-80:] or "model"
    return settings.log_dir / f"worker-{safe}.log"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, identity: bytes, log_path: Path):
        self.proc = proc
        self.pid = proc.pid
        self.identity = identity
        self.log_path = log_path
        self.pidfd = os.pidfd_open(proc.pid)
        self.started = time.monotonic()
        self.last_heard = self.started
        self.heard_any = False
        self.stop_rung = RUNNING
        self.stop_deadline: float | None = None
        self.kill_reason: str | None = None
        self.returncode: int | None = None

    @classmethod
    def start(cls, module: str, args: list[str], payload: dict, log_path: Path, identity: bytes, what: str) -> "WorkerProcess":
        """Start ``python -m module args``, its output appended to
        ``log_path``. ``payload`` goes to its stdin as JSON, never on the
        command line, where every local user could read it."""
        with open(log_path, "ab") as log_file:
            log_file.write(f"--- {what} starting at {time.ctime()}\n".encode())
            log_file.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=log_file,
                # Its own process group: the stop ladder signals the whole
                # group, and a Ctrl-C meant for `corral serve` never reaches it.
                start_new_session=True,
                close_fds=True,
            )
        try:
            proc.stdin.write(json.dumps(payload).encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once: its pidfd reports that
        log.info("process spawned", what=what, pid=proc.pid, log=str(log_path))
        return cls(proc, identity, log_path)

    @classmethod
    def spawn(cls, spec: ModelSpec, settings: Settings, identity: bytes, log_level: str = "info") -> "WorkerProcess":
        args = [
            "--endpoint", settings.workers_endpoint,
            "--identity", identity.decode(),
            "--parent", str(os.getpid()),
            "--heartbeat-interval", str(settings.heartbeat_interval),
            "--heartbeat-liveness", str(settings.heartbeat_liveness),
            "--log-level", log_level,
        ]
        return cls.start("corral.workers", args, spec.to_wire(), worker_log_path(settings, spec.name), identity,
                         f"worker for {spec.name}")

    @property
    def sentinel(self) -> int:
        """Readable once the process has exited."""
        return self.pidfd

    # -- watching --------------------------------------------------------

    def heard(self, now: float) -> None:
        self.last_heard = now
        self.heard_any = True

    def reap(self) -> int:
        """Collect the exit status once the pidfd says the process is gone."""
        self.returncode = self.proc.wait()
        os.close(self.pidfd)
        return self.returncode

    def describe_exit(self) -> str:
        if self.kill_reason:
            return self.kill_reason
        rc = self.returncode
        if rc is None:
            return "is still running"
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return f"was killed by {name}"
        return f"exited with code {rc}"

    def stderr_tail(self, lines: int = 3, max_chars: int = 400) -> str:
        """The last lines this run wrote to its log, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        text = text[text.rfind("\n--- ") + 1 :].split("\n", 1)[-1]  # this run's lines, after its "---" line
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail)[-max_chars:]

    def rss_bytes(self) -> int | None:
        try:
            return psutil.Process(self.pid).memory_info().rss
        except (psutil.Error, OSError):
            return None

    # -- stopping --------------------------------------------------------

    def kill(self, reason: str) -> None:
        """Kill at once (a hung worker); the pidfd reports the exit."""
        self.kill_reason = reason
        self._signal_group(signal.SIGKILL)
        self.stop_rung = KILLED

    def begin_stop(self, now: float, timeout: float) -> None:
        """First rung: the caller has sent the shutdown message."""
        if self.stop_rung == RUNNING:
            self.stop_rung = ASKED
            self.stop_deadline = now + timeout

    def advance_stop(self, now: float, timeout: float) -> None:
        """Climb the ladder when a rung's deadline has passed: SIGTERM to the
        process group, then SIGKILL. Nothing is ever stuck stopping."""
        if self.stop_deadline is None or now < self.stop_deadline or self.returncode is not None:
            return
        if self.stop_rung == ASKED:
            log.warning("worker ignored shutdown; SIGTERM", pid=self.pid)
            self._signal_group(signal.SIGTERM)
            self.stop_rung, self.stop_deadline = TERMINATED, now + timeout
        elif self.stop_rung == TERMINATED:
            log.warning("worker ignored SIGTERM; SIGKILL", pid=self.pid)
            self._signal_group(signal.SIGKILL)
            self.stop_rung, self.stop_deadline = KILLED, None

    def terminate(self) -> None:
        """SIGTERM to its process group: a polite request to finish and exit."""
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)


class ProcessLauncher:
    """Starts real worker processes. The supervisor's seam: tests hand it a
    launcher of in-process fake workers instead, with the same handle."""

    def __init__(self, settings: Settings, log_level: str = "info"):
        self.settings, self.log_level = settings, log_level

    def spawn(self, spec: ModelSpec, identity: bytes) -> WorkerProcess:
        return WorkerProcess.spawn(spec, self.settings, identity, self.log_level)
