"""Gateway entry point: ``python -m corral.gateway --listen HOST:PORT``.

The supervisor starts it (from ``CORRAL_HTTP``) with stderr going to
``$CORRAL_HOME/logs/gateway.log``, and restarts it when it dies. It reads
its settings from the environment like every corral process.

Exit codes, for the supervisor to act on:

- 0: stopped by SIGTERM or SIGINT;
- 2 (``EXIT_USAGE``): a bad address, or a non-loopback address without
  ``CORRAL_API_KEY``: restarting would fail the same way;
- 3: the process that started it (``--parent``) died before it started
  (later, the kernel kills it with that process);
- 98 (``EXIT_PORT_IN_USE``, EADDRINUSE's number): the port is taken by
  another program: show "port in use" in ``corral status`` and retry with
  back-off, not at once;
- 1: anything else (a crash).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from corral.supervisor.errors import CorralError
from corral.supervisor.logs import configure_logging, get_logger

EXIT_USAGE = 2
EXIT_PORT_IN_USE = 98

log = get_logger()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so that a port
    in use is one clear line and one exit code, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def private_workdir(home: os.PathLike) -> str:
    """An empty directory of our own to run in: a model name that happens to
    match a file relative to the working directory can then never be taken
    for that file by the client library."""
    path = os.path.join(home, "gateway")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.gateway", description="corral's HTTP gateway")
    parser.add_argument("--listen", help="HOST:PORT (default: the http setting, CORRAL_HTTP)")
    parser.add_argument("--parent", type=int, help="exit when this process (the supervisor) dies")
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("CORRAL_LOG_LEVEL", "info"), process="gateway")
    if args.parent:
        from corral.workers.__main__ import die_with_parent

        die_with_parent(args.parent)

    from corral.configs.settings import load_settings
    from corral.gateway.config import load_gateway_config

    try:
        settings = load_settings()
        config = load_gateway_config(settings, args.listen)
    except CorralError as exc:
        log.error("gateway cannot start", error=exc.message)
        return EXIT_USAGE
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("port in use: another program listens there; the gateway is not running", address=config.address)
            return EXIT_PORT_IN_USE
        log.error("gateway cannot listen", address=config.address, error=exc.strerror)
        return EXIT_USAGE
    os.chdir(private_workdir(settings.home))
    return serve(sock, settings, config)


def serve(sock: socket.socket, settings, config) -> int:
    import uvicorn

    from corral.gateway.app import build_app
    from corral.gateway.connection_guard import connection_cap, guarded_protocol

    app = build_app(settings, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=guarded_protocol(settings.http_read_timeout, connection_cap(settings.http_max_connections)),
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
        )
    )

    import uvloop

    uvloop.run(server.serve(sockets=[sock]))
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
