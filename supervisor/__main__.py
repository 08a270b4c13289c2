"""Supervisor entry point: ``python -m corral.supervisor`` (what the client
starts in the background) and ``corral serve`` (the same, in the foreground).
"""

from __future__ import annotations

import argparse
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
    try:
        settings = load_settings()
        configure_logging(settings.log_level, process="supervisor")
        # On stdin, not the command line, where every local user could read it.
        preload = json.loads(sys.stdin.read(MAX_PRELOAD_BYTES) or "null") if args.preload else None
        serve(settings, preload if isinstance(preload, dict) else None)
    except CorralError as exc:
        get_logger().error("supervisor cannot start", error=exc.message)
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
