"""Supervisor entry point: ``python -m corral.supervisor`` (what the client
starts in the background) and ``corral serve`` (the same, in the foreground).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from corral.configs.settings import Settings, load_settings
from corral.supervisor.errors import CorralError
from corral.supervisor.home import hold_pid_lock, prepare_home
from corral.supervisor.logs import configure_logging, get_logger

MAX_PRELOAD_BYTES = 64 * 1024


def serve(settings: Settings, preload: dict | None = None) -> None:
    # Imported late: `corral --help` must not pay for zmq and psutil.
    from corral.supervisor.server import Supervisor

    prepare_home(settings)
    lock_fd = hold_pid_lock(settings)
    supervisor = Supervisor(settings, log_level=settings.log_level)
    supervisor.install_signal_handlers()
    if preload:
        supervisor.preload(preload)
    try:
        supervisor.run()
    finally:
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.supervisor")
    parser.add_argument("--preload", action="store_true",
                        help="read the model fields (JSON) of a model to start loading at once from stdin")
    args = parser.parse_args(argv)
    # The client that started us reads why we could not start from this
    # pipe: the log may be on the very disk that is full.
    start_fd = os.environ.pop("CORRAL_START_FD", None)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, process="supervisor")
        # On stdin, not the command line, where every local user could read it.
        preload = json.loads(sys.stdin.read(MAX_PRELOAD_BYTES) or "null") if args.preload else None
        serve(settings, preload if isinstance(preload, dict) else None)
    except (CorralError, OSError) as exc:
        error = exc if isinstance(exc, CorralError) else _os_error(exc)
        _tell_starter(start_fd, error.message)
        try:
            get_logger().error("supervisor cannot start", error=error.message)
            print(f"Error: {error.message}", file=sys.stderr)
        except OSError:
            pass  # the log's disk: the starter heard it through the pipe
        return error.exit_code
    return 0


def _os_error(exc: OSError) -> CorralError:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CorralError(f"the disk holding the corral home is full (writing{where or ' its files'}); "
                           "free some space, then run the command again")
    return CorralError(f"the supervisor cannot start: {exc.strerror or exc}{where and ' (' + where.strip() + ')'}")


def _tell_starter(fd: str | None, message: str) -> None:
    if fd is None or not fd.isdigit():
        return
    try:
        os.write(int(fd), message.encode()[:4000])
    except OSError:
        pass  # the client is gone or never listened


if __name__ == "__main__":
    sys.exit(main())
