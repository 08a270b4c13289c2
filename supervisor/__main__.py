"""Supervisor entry point: ``python -m corral.supervisor`` (what the client
starts in the background) and ``corral serve`` (the same, in the foreground).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys

from corral.configs.settings import Settings, load_settings
from corral.supervisor.errors import CorralError
from corral.supervisor.logs import configure_logging, get_logger


class AlreadyRunning(CorralError):
    exit_code = 1


def prepare_home(settings: Settings) -> None:
    """``$CORRAL_HOME`` holds sockets and logs: private to its user."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    settings.log_dir.mkdir(mode=0o700, exist_ok=True)


def hold_pid_lock(settings: Settings) -> int:
    """One supervisor per home: an exclusive lock held for the process's
    life (the kernel drops it however the process ends), with the pid inside."""
    fd = os.open(settings.pid_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"a corral supervisor is already running for {settings.home} (pid {pid}); stop it with `corral stop`") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def serve(settings: Settings, log_level: str = "info", preload: dict | None = None) -> None:
    # Imported late: `corral --help` must not pay for zmq and psutil.
    from corral.supervisor.server import Supervisor

    prepare_home(settings)
    lock_fd = hold_pid_lock(settings)
    supervisor = Supervisor(settings, log_level=log_level)
    supervisor.install_signal_handlers()
    if preload:
        supervisor.preload(preload)
    try:
        supervisor.run()
    finally:
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.supervisor")
    parser.add_argument("--preload", type=json.loads, help="model fields (JSON) of a model to start loading at once")
    args = parser.parse_args(argv)
    log_level = os.environ.get("CORRAL_LOG_LEVEL", "info")
    configure_logging(log_level, process="supervisor")
    try:
        serve(load_settings(), log_level, args.preload)
    except CorralError as exc:
        get_logger().error("supervisor cannot start", error=exc.message)
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
