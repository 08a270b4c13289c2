"""The supervisor's event loop: the single owner of all state.

One thread, one zmq Poller over the client socket, the worker socket, a
sentinel fd per worker and a signal wakeup pipe. No locks: nothing else
touches the table. The loop reads frames and sentinels, hands each to the
code that decides what it means (:mod:`client_ops`, :mod:`lifecycle`,
:mod:`scheduler`, which apply :mod:`policy`), and carries out their effects:
replies, frames to workers, processes watched. An unexpected exception while
handling one message ends that request with ``internal_error``; the loop
goes on.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

import zmq

from corral.configs.settings import Settings
from corral.supervisor import client_ops, lifecycle, policy, protocol, scheduler
from corral.supervisor.errors import CorralError, InternalError
from corral.supervisor.logs import get_logger
from corral.supervisor.gateway_keeper import GatewayKeeper
from corral.supervisor.restarter import Restarter
from corral.supervisor.sockets import MORE, NOBLOCK, bind_router
from corral.supervisor.table import State, Table, Worker
from corral.supervisor.worker_process import ProcessLauncher

log = get_logger()

# Frames read from one socket per loop turn, so that neither side starves.
BATCH = 256
# Rounds of reading both sockets after one poll, while frames keep coming.
DRAIN_ROUNDS = 16


class Supervisor:
    def __init__(self, settings: Settings, *, log_level: str = "info", launcher: Any = None):
        self.settings = settings
        self.launcher = launcher or ProcessLauncher(settings, log_level)
        self.started_wall, self.started = time.time(), time.monotonic()
        self.ctx = zmq.Context()
        self.front = bind_router(self.ctx, settings.socket_path)
        self.back = bind_router(self.ctx, settings.workers_socket_path)
        self.poller = zmq.Poller()
        self.poller.register(self.front, zmq.POLLIN)
        self.poller.register(self.back, zmq.POLLIN)
        self.table = Table()
        self.restarter = Restarter(limit=settings.crash_limit)
        self.gateway = GatewayKeeper(settings, self.restarter, self._watch_fd, self._unwatch_fd)
        self.by_sentinel: dict[int, Worker] = {}
        self.next_worker = 1
        self.shutdown_requests: list[tuple[bytes, Any]] = []
        self.running = True
        self.next_beat = 0.0
        self.beat = protocol.command(protocol.HEARTBEAT)
        self._wakeup_r: int | None = None
        self._signalled = False

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        log.info("supervisor ready", pid=os.getpid(), socket=str(self.settings.socket_path))
        try:
            while self.running:
                self.step()
        finally:
            self.close()

    def step(self, timeout_ms: int | None = None) -> None:
        """One turn: wait for something to happen (at most until the next
        deadline), then handle all of it."""
        ready = dict(self.poller.poll(self._poll_timeout_ms() if timeout_ms is None else timeout_ms))
        # A worker's last frames, then its exit, then new requests: nothing
        # is sent to a worker already known to be gone.
        if self.back in ready:
            self._drain(self.back, self._on_worker)
        for fd, worker in list(self.by_sentinel.items()):
            if fd in ready:
                self.unwatch(worker)  # first: a failure below must not make it fire for ever
                self._guard(lifecycle.on_exit, self, worker)
        if self.gateway.sentinel in ready:
            self._guard(self.gateway.on_exit, time.monotonic())
        if self.front in ready or self.back in ready:
            # While frames keep coming, read on without polling: a failed
            # non-blocking read costs less than a poll.
            for _ in range(DRAIN_ROUNDS):
                if not (self._drain(self.front, self._on_client) + self._drain(self.back, self._on_worker)):
                    break
        if self._wakeup_r in ready:
            self._on_wakeup()
        now = time.monotonic()
        self._guard(lifecycle.tick, self, now)
        if not self.shutting_down:
            busy = any(w.state in (State.LOADING, State.BUSY) for w in self.table.all_workers())
            self._guard(self.gateway.tick, now, busy)
        self.gateway.advance_stop(now)
        if self.shutdown_requests and not self.table.models and self.gateway.sentinel is None:
            for client, id in self.shutdown_requests:
                self.reply(client, protocol.event(protocol.DONE, id=id))
            self.running = False

    def _drain(self, sock: zmq.Socket, handle: Callable[[bytes, bytes], None]) -> int:
        """Handle up to BATCH waiting messages; returns how many there were.
        Two plain recvs and the frame's ``more`` flag cost a third of
        recv_multipart, whose socket-option calls dominate at 100k frames/s."""
        for n in range(BATCH):
            try:
                peer = sock.recv(NOBLOCK)
            except zmq.Again:
                return n
            frame = sock.recv(NOBLOCK, copy=False)
            if frame.more:
                while sock.recv(NOBLOCK, copy=False).more:
                    pass
                log.warning("dropped a message of more than two parts")
                continue
            handle(peer, frame.bytes)
        return BATCH

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadlines = [self.next_beat]
        if self.gateway.retry_at is not None:
            deadlines.append(self.gateway.retry_at)
        for model in self.table.models.values():
            if model.expires_at is not None and model.idle:
                deadlines.append(model.expires_at)
            for worker in model.workers:
                if worker.handle.stop_deadline is not None:
                    deadlines.append(worker.handle.stop_deadline)
        return max(0, int((min(deadlines) - now) * 1000) + 1)

    def _guard(self, fn: Callable, *args: Any) -> bool:
        """Run one piece of handling; an unexpected exception is logged with
        its traceback and the loop goes on."""
        try:
            fn(*args)
            return True
        except Exception:
            log.exception("internal error while handling a message", handler=fn.__qualname__)
            return False

    # -- frames in --------------------------------------------------------

    def _on_client(self, client: bytes, frame: bytes) -> None:
        try:
            msg = protocol.parse_client_request(frame)
        except CorralError as exc:
            log.info("bad request", error=exc.message)
            if exc.request_id is not None:
                self.reply(client, protocol.error(exc.request_id, exc))
            return
        try:
            client_ops.handle(self, client, msg)
        except CorralError as exc:
            self.reply(client, protocol.error(msg.id, exc))
        except Exception:
            log.exception("internal error while handling a request", op=type(msg).__name__)
            client_ops.abandon(self, client, msg.id)

    def _on_worker(self, identity: bytes, frame: bytes) -> None:
        worker = self.table.workers.get(identity)
        if worker is None:
            return  # a worker we already gave up on
        if not self._guard(lifecycle.on_frame, self, worker, frame):
            # The request that frame belongs to cannot be trusted to end by
            # itself any more: end it here.
            req = worker.running.pop(protocol.frame_ids(frame)[1], None)
            if req is not None:
                lifecycle.fail(self, req, InternalError("corral hit an internal error with this request; "
                                                        "see `corral logs` and report it"))

    def _on_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 64):
                pass
        except BlockingIOError:
            pass
        if self._signalled and not self.shutdown_requests:
            self.shutdown_requests.append((b"", 0))
            self.begin_shutdown()

    # -- effects ---------------------------------------------------------

    def reply(self, client: bytes, frame: bytes) -> bool:
        if not client:
            return False  # a preload: nobody to answer
        try:
            self.front.send(client, MORE)
            self.front.send(frame, NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the client went away
            log.info("client unreachable", error=str(exc))
            return False

    def send_worker(self, worker: Worker, frame: bytes, *, data: bool = False) -> None:
        """To the worker's control socket (heartbeats, cancel), or with
        ``data`` to the socket its main thread reads work from."""
        identity = worker.identity + protocol.WORKER_DATA_SUFFIX if data else worker.identity
        try:
            self.back.send(identity, MORE)
            self.back.send(frame, NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected yet, or gone: its sentinel tells the rest

    def watch(self, worker: Worker) -> None:
        self.by_sentinel[worker.handle.sentinel] = worker
        self._watch_fd(worker.handle.sentinel)

    def unwatch(self, worker: Worker) -> None:
        self._unwatch_fd(worker.handle.sentinel)
        del self.by_sentinel[worker.handle.sentinel]

    def _watch_fd(self, fd: int) -> None:
        self.poller.register(fd, zmq.POLLIN)

    def _unwatch_fd(self, fd: int) -> None:
        self.poller.unregister(fd)

    def schedule(self) -> None:
        scheduler.schedule(self)

    def budget(self) -> int:
        """Memory for all models: the configured budget, or what the machine
        has available plus what our own workers already hold."""
        if self.settings.memory_budget is not None:
            return self.settings.memory_budget
        import psutil

        held = sum(m.held_bytes for m in self.table.models.values())
        return policy.auto_budget(psutil.virtual_memory().available, held)

    def gateway_facts(self) -> dict | None:
        return self.gateway.facts()

    # -- starting and stopping ---------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return bool(self.shutdown_requests)

    def begin_shutdown(self) -> None:
        log.info("shutting down", models=len(self.table.models))
        self.gateway.stop()
        for model in list(self.table.models.values()):
            lifecycle.unload(self, model, "the supervisor is shutting down")
        self.schedule()

    def preload(self, fields: dict) -> None:
        """Start loading a model before any client asks: a load request with
        nobody to answer. A problem is only logged; the client that asked
        for the preload hears about it when it sends its own request."""
        try:
            msg = protocol.parse_client_request(protocol.request(protocol.LOAD, 0, **fields))
            client_ops.handle(self, b"", msg)
        except CorralError as exc:
            log.info("preload refused", model=fields.get("model"), error=exc.message)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop every worker, then the loop. The handler
        only raises a flag; the wakeup pipe in the poller brings the loop
        round to act on it, so no state changes inside a signal handler."""
        self._wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w)
        self.poller.register(self._wakeup_r, zmq.POLLIN)

        def handler(signum, frame):
            self._signalled = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close(self) -> None:
        for worker in self.table.all_workers():
            worker.handle.kill("was killed because the supervisor stopped")
        self.gateway.kill()
        self.front.close(0)
        self.back.close(0)
        self.ctx.term()
        for path in (self.settings.socket_path, self.settings.workers_socket_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        log.info("supervisor stopped")
