"""Worker entry point: ``python -m corral.workers --endpoint ... < spec.json``.

Started only by the supervisor, in a session of its own, with stderr going
to its log file in ``$CORRAL_HOME/logs``. The model spec arrives as JSON on
stdin: on the command line every local user could read it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys

MAX_SPEC_BYTES = 1024 * 1024


def die_with_parent(expected_parent: int) -> None:
    """Ask the kernel to kill this process when the supervisor dies, even by
    SIGKILL; the heartbeat timeout is the second line of defence."""
    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat timeout still ends the worker
    # The parent may have died before prctl took effect.
    if os.getppid() != expected_parent:
        sys.exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.workers")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--heartbeat-liveness", type=int, default=5)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    # Ctrl-C belongs to the user's terminal, not to a worker in its own session.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from corral.supervisor.logs import configure_logging, get_logger
    from corral.workers.backend import backend_class
    from corral.workers.runtime import WorkerRuntime

    spec = json.loads(sys.stdin.read(MAX_SPEC_BYTES))
    configure_logging(args.log_level, process=f"worker {spec['name']}")
    get_logger().info("worker starting", pid=os.getpid(), backend=spec["backend"], path=spec["path"])
    try:
        backend = backend_class(spec["backend"])(spec)
    except Exception as exc:  # e.g. the engine library fails to import
        backend = _Unavailable(spec, exc)
    runtime = WorkerRuntime(
        backend,
        endpoint=args.endpoint,
        identity=args.identity.encode(),
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_liveness=args.heartbeat_liveness,
    )
    return runtime.serve()


class _Unavailable:
    """Stands in for a backend whose engine cannot even be imported, so that
    the failure reaches the user as a failed load with the reason."""

    def __init__(self, spec: dict, exc: Exception):
        self.spec, self.exc = spec, exc

    def load(self):
        raise RuntimeError(f"the {self.spec['backend']} backend is unavailable: {self.exc}")


if __name__ == "__main__":
    sys.exit(main())
