"""The supervisor's two listening sockets: one for clients, one for workers."""

from __future__ import annotations

import os

import zmq

from corral.supervisor import protocol

# Plain ints: combining pyzmq's enum flags costs more than the send itself.
NOBLOCK = int(zmq.NOBLOCK)
MORE = int(zmq.SNDMORE) | NOBLOCK


def bind_router(ctx: zmq.Context, path: os.PathLike) -> zmq.Socket:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
    sock.setsockopt(zmq.LINGER, 0)
    # Sending to a client that has gone raises instead of vanishing silently,
    # so a generation nobody reads is cancelled.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # A reconnecting client with a leftover identity must not be refused.
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    # Never drop a token for a slow reader: a stream is bounded by its
    # max_tokens and the context, so the queue is too.
    sock.setsockopt(zmq.SNDHWM, 0)
    if os.path.exists(path):
        os.unlink(path)  # stale socket of a dead supervisor; we hold the pid lock
    old_umask = os.umask(0o177)
    try:
        sock.bind(f"ipc://{path}")
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock
