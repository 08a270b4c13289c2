"""The commands that only talk to a supervisor that already runs: `ps`,
`status`, `unload` and `stop` never start one just to report that nothing
is loaded."""

from __future__ import annotations

import time

from corral.client.api import Client
from corral.client.launch import supervisor_pid
from corral.configs.settings import Settings
from corral.supervisor.errors import CorralError

NOT_RUNNING = "No corral supervisor is running."
STOP_WAIT_S = 10.0


def running_client(settings: Settings) -> Client | None:
    """A client of the running supervisor, or None when none runs."""
    if supervisor_pid(settings) is None:
        return None
    return Client(settings, autostart=False)


def stop_supervisor(settings: Settings) -> int | None:
    """Stop every worker, then the supervisor; returns its pid once it has
    exited (None if none was running)."""
    pid = supervisor_pid(settings)
    if pid is None:
        return None
    with Client(settings, autostart=False) as client:
        client.shutdown()
    # The reply comes just before the process ends; wait until it has.
    deadline = time.monotonic() + STOP_WAIT_S
    while True:
        if exited(pid):
            return pid
        if time.monotonic() > deadline:
            raise CorralError(f"the corral supervisor (pid {pid}) is still running {STOP_WAIT_S:.0f} s after it was told to stop")
        time.sleep(0.01)


def exited(pid: int) -> bool:
    """Whether process ``pid`` has ended. A zombie has: it only waits to be
    collected by its parent, or, orphaned (a supervisor whose starting client
    has exited), by PID 1, which can take seconds in a container."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
