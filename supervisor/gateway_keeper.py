"""The HTTP gateway's process, kept running by the supervisor.

The gateway is one more client of the supervisor's socket, in a process of
its own (``python -m corral.gateway``); the supervisor only starts it, watches
its sentinel beside the workers', and starts it again when it dies, under
the same crash back-off as a model's workers. Its exit code says what
happened (see ``corral.gateway.__main__``): a port another program holds
is retried every PORT_RETRY_S seconds, a bad address is not retried at all,
anything else is a crash.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from corral.configs.settings import Settings
from corral.supervisor.logs import get_logger
from corral.supervisor.restarter import Restarter
from corral.supervisor.worker_process import WorkerProcess

log = get_logger()

NAME = "the HTTP gateway"  # its name in the restarter's history
EXIT_USAGE, EXIT_PORT_IN_USE = 2, 98  # corral.gateway.__main__'s exit codes
PORT_RETRY_S = 30.0
# The gateway's start (an interpreter and uvicorn: about half a second of
# CPU) waits while a model loads or answers, so that it never slows the
# first answer of a cold start; but no longer than this after the
# supervisor started.
DEFER_WHILE_LOADING_S = 5.0


def address(http: tuple[str, int]) -> str:
    host, port = http
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GatewayKeeper:
    def __init__(self, settings: Settings, restarter: Restarter, watch: Callable[[int], None], unwatch: Callable[[int], None]):
        self.settings, self.restarter = settings, restarter
        self.watch, self.unwatch = watch, unwatch
        self.handle: WorkerProcess | None = None
        self.state = "off" if settings.http is None else "starting"
        self.error: str | None = None
        self.retry_at: float | None = None if settings.http is None else 0.0
        self.restarts = 0
        self.created = time.monotonic()

    @property
    def sentinel(self) -> int | None:
        return self.handle.sentinel if self.handle is not None else None

    def tick(self, now: float, busy: bool = False) -> None:
        """Start the gateway when it is due (``busy``: a model loads or answers)."""
        if self.handle is not None or self.retry_at is None or now < self.retry_at:
            return
        if busy and self.restarts == 0 and now - self.created < DEFER_WHILE_LOADING_S:
            self.retry_at = now + 0.2  # look again soon (the model's ready frame wakes the loop too)
            return
        left = self.restarter.backoff_left(NAME, now)
        if left is not None:
            self.retry_at = now + left
            return
        args = ["--listen", address(self.settings.http), "--parent", str(os.getpid())]
        try:
            self.handle = WorkerProcess.start("corral.gateway", args, {}, self.settings.log_dir / "gateway.log",
                                              b"gateway", NAME)
        except OSError as exc:
            self.state, self.error, self.retry_at = "failed", f"could not start: {exc}", now + PORT_RETRY_S
            return
        self.state, self.retry_at = "running", None
        self.watch(self.handle.sentinel)

    def on_exit(self, now: float) -> None:
        handle, self.handle = self.handle, None
        self.unwatch(handle.sentinel)
        code = handle.reap()
        how = handle.describe_exit()
        if self.state == "stopping":
            self.state = "off"
        elif code == EXIT_PORT_IN_USE:
            self.state, self.error = "port in use", f"another program listens on {address(self.settings.http)}"
            self.retry_at = now + PORT_RETRY_S
            log.warning("HTTP port in use; will try again", address=address(self.settings.http), in_s=PORT_RETRY_S)
        elif code == EXIT_USAGE:
            self.state, self.error = "failed", f"it cannot listen there; see {handle.log_path}"
            log.error("the HTTP gateway cannot start; not retrying", how=how, tail=handle.stderr_tail())
        else:
            self.restarter.failed(NAME, now)
            self.state, self.error, self.retry_at = "restarting", f"it {how}", now
            self.restarts += 1
            log.warning("the HTTP gateway died; restarting", how=how, tail=handle.stderr_tail())

    def stop(self) -> None:
        if self.handle is not None and self.state != "stopping":
            self.state = "stopping"
            self.handle.begin_stop(time.monotonic(), self.settings.stop_timeout)
            self.handle.terminate()  # uvicorn finishes what it can, then exits

    def advance_stop(self, now: float) -> None:
        if self.handle is not None:
            self.handle.advance_stop(now, self.settings.stop_timeout)

    def kill(self) -> None:
        if self.handle is not None:
            self.handle.kill("was stopped with the supervisor")

    def facts(self) -> dict[str, Any] | None:
        """What `corral status` shows about HTTP."""
        if self.settings.http is None:
            return None
        return {
            "address": address(self.settings.http),
            "state": self.state,
            "pid": self.handle.pid if self.handle is not None else None,
            "error": None if self.state == "running" else self.error,
            "restarts": self.restarts,
        }
