"""The supervisor's event loop: the single owner of all state.

One thread, one zmq Poller over the client socket, the worker socket and a
pidfd per worker. No locks: nothing else touches the table. Every client
request ends in exactly one way: its replies end with ``done``, ``result``
or ``error``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable

import psutil
import zmq

from corral.configs import catalog
from corral.configs.settings import Settings
from corral.supervisor import policy, protocol
from corral.supervisor.errors import (
    BadRequest,
    Busy,
    Cancelled,
    CorralError,
    CrashLoop,
    InsufficientMemory,
    ModelLoadFailed,
    ShuttingDown,
    WorkerCrashed,
)
from corral.supervisor.logs import get_logger
from corral.supervisor.memory import estimate_memory
from corral.supervisor.reports import describe_slot, supervisor_facts
from corral.supervisor.slots import ModelSlot, Request, State
from corral.supervisor.worker_process import WorkerProcess

log = get_logger()

# How long a new worker may take to say anything at all (interpreter start
# and imports) before it is taken for hung; heartbeats cover the rest.
STARTUP_GRACE_S = 60.0
# Frames read from one socket per loop turn, so that neither side starves.
BATCH = 256
# Rounds of reading both sockets after one poll, while frames keep coming.
DRAIN_ROUNDS = 16
# Requests sent ahead to a worker: the one generating and the next, so the
# worker never idles between short requests. Only behind a request of at
# most PIPELINE_MAX_TOKENS tokens: behind a long answer, a newcomer from
# another client must wait for the running request alone.
PIPELINE_DEPTH = 2
PIPELINE_MAX_TOKENS = 16
# Plain ints: combining pyzmq's enum flags costs more than the send itself.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
# A model whose worker fails this often within the window is not restarted
# until the back-off has passed: no respawn storm.
CRASH_LIMIT, CRASH_WINDOW_S, CRASH_BACKOFF_S = 3, 60.0, 60.0
# With the budget exceeded, a worker this many times past its estimate is
# stopped before the machine starts swapping.
GROWTH_LIMIT = 1.5
# Under the automatic budget, "exceeded" means the machine is this close to
# running out of memory.
LOW_MEMORY_FRACTION = 0.02


def _is_short(req: Request) -> bool:
    return 0 < req.msg.get("options", {}).get("max_tokens", 0) <= PIPELINE_MAX_TOKENS


def _bind(ctx: zmq.Context, path: os.PathLike) -> zmq.Socket:
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


class Supervisor:
    def __init__(self, settings: Settings, *, log_level: str = "info"):
        self.settings = settings
        self.log_level = log_level
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.ctx = zmq.Context()
        self.front = _bind(self.ctx, settings.socket_path)
        self.back = _bind(self.ctx, settings.workers_socket_path)
        self.poller = zmq.Poller()
        self.poller.register(self.front, zmq.POLLIN)
        self.poller.register(self.back, zmq.POLLIN)
        self.slots: dict[str, ModelSlot] = {}
        self.by_identity: dict[bytes, ModelSlot] = {}
        self.by_pidfd: dict[int, ModelSlot] = {}
        self.requests: dict[int, Request] = {}  # rid -> queued or running
        self.by_client: dict[tuple[bytes, Any], int] = {}  # (client, id) -> rid
        self.next_rid = 1
        self.next_worker = 1
        self.requests_total = 0
        self.crashes: dict[str, list[float]] = {}  # model -> monotonic times of failures
        self.shutdown_requests: list[Request] = []
        self.running = True
        self.next_beat = 0.0
        self.beat = protocol.command(protocol.HEARTBEAT)
        self._wakeup_r: int | None = None
        self._handlers: dict[str, Callable[[bytes, dict], None]] = {
            protocol.GENERATE: self._on_model_request,
            protocol.CHAT: self._on_model_request,
            protocol.LOAD: self._on_model_request,
            protocol.UNLOAD: self._on_unload,
            protocol.PS: self._on_ps,
            protocol.STATUS: self._on_status,
            protocol.CANCEL: self._on_cancel,
            protocol.SHUTDOWN: self._on_shutdown,
        }

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        log.info("supervisor ready", pid=os.getpid(), socket=str(self.settings.socket_path))
        try:
            while self.running:
                ready = dict(self.poller.poll(self._poll_timeout_ms()))
                if self.front in ready or self.back in ready:
                    # While frames keep coming, read on without polling: a
                    # failed non-blocking read costs less than a poll.
                    for _ in range(DRAIN_ROUNDS):
                        if not (self._drain(self.front, self._on_client) + self._drain(self.back, self._on_worker)):
                            break
                for fd, slot in list(self.by_pidfd.items()):
                    if fd in ready:
                        self._on_worker_exit(slot)
                if self._wakeup_r in ready:
                    self._on_wakeup()
                self._tick(time.monotonic())
        finally:
            self._close()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop every worker, then the loop. The handler
        only raises a flag; the wakeup pipe in the poller brings the loop
        round to act on it, so no state changes inside a signal handler."""
        self._signalled = False
        self._wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w)
        self.poller.register(self._wakeup_r, zmq.POLLIN)

        def handler(signum, frame):
            self._signalled = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _on_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 64):
                pass
        except BlockingIOError:
            pass
        if self._signalled and not self.shutdown_requests:
            self._begin_shutdown()

    def _drain(self, sock: zmq.Socket, handle: Callable[[bytes, bytes], None]) -> int:
        """Handle up to BATCH waiting messages; returns how many there were."""
        for n in range(BATCH):
            try:
                parts = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return n
            if len(parts) != 2:
                log.warning("dropped frame with unexpected parts", parts=len(parts))
                continue
            handle(parts[0], parts[1])
        return BATCH

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadlines = [self.next_beat]
        for slot in self.slots.values():
            if slot.expires_at is not None and slot.idle:
                deadlines.append(slot.expires_at)
            if slot.worker is not None and slot.worker.stop_deadline is not None:
                deadlines.append(slot.worker.stop_deadline)
        return max(0, int((min(deadlines) - now) * 1000) + 1)

    def _tick(self, now: float) -> None:
        if now >= self.next_beat:
            self.next_beat = now + self.settings.heartbeat_interval
            for slot in list(self.slots.values()):
                if slot.worker is not None:
                    self._send_worker(slot, self.beat)
                    self._check_alive(slot, now)
            self._watch_memory()
        for slot in list(self.slots.values()):
            if policy.expired(slot, now):
                log.info("idle timeout", model=slot.name)
                self._stop(slot)
            if slot.worker is not None:
                slot.worker.advance_stop(now, self.settings.stop_timeout)
        if self.shutdown_requests and not self.slots:
            for req in self.shutdown_requests:
                self._reply(req.client, protocol.event(protocol.DONE, id=req.id))
            self.running = False

    def _check_alive(self, slot: ModelSlot, now: float) -> None:
        worker = slot.worker
        limit = self.settings.heartbeat_interval * self.settings.heartbeat_liveness
        if not worker.heard_any:
            limit = max(limit, STARTUP_GRACE_S)
        if worker.kill_reason is None and policy.hung(worker.last_heard, now, limit):
            silent = now - worker.last_heard
            log.warning("worker hung; killing", model=slot.name, pid=worker.pid, silent_s=round(silent, 1))
            worker.kill(f"stopped answering (no heartbeat for {silent:.0f} s) and was killed")

    # -- replies ---------------------------------------------------------

    def _reply(self, client: bytes, frame: bytes) -> bool:
        try:
            self.front.send(client, _MORE)
            self.front.send(frame, _NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the client went away
            log.info("client unreachable", error=str(exc))
            return False

    def _fail(self, req: Request, exc: CorralError) -> None:
        self._forget(req)
        self._reply(req.client, protocol.error(req.id, exc))

    def _forget(self, req: Request) -> None:
        self.requests.pop(req.rid, None)
        self.by_client.pop((req.client, req.id), None)

    def _send_worker(self, slot: ModelSlot, frame: bytes, *, data: bool = False) -> None:
        """To the worker's control socket (heartbeats, cancel), or with
        ``data`` to the socket its main thread reads work from."""
        identity = slot.worker.identity + protocol.WORKER_DATA_SUFFIX if data else slot.worker.identity
        try:
            self.back.send(identity, _MORE)
            self.back.send(frame, _NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected yet, or gone: its pidfd tells the rest

    # -- client requests -------------------------------------------------

    def _on_client(self, client: bytes, frame: bytes) -> None:
        try:
            msg = protocol.parse_client_request(frame)
        except BadRequest as exc:
            log.info("bad request", error=exc.message)
            if exc.request_id is not None:
                self._reply(client, protocol.error(exc.request_id, exc))
            return
        try:
            self._handlers[msg["op"]](client, msg)
        except CorralError as exc:
            self._reply(client, protocol.error(msg["id"], exc))

    def _on_model_request(self, client: bytes, msg: dict) -> None:
        if self.shutdown_requests:
            raise ShuttingDown("the supervisor is shutting down; run the command again in a moment")
        spec = catalog.resolve(msg["model"], self.settings, model_type=msg.get("model_type"))
        slot = self.slots.get(spec.name)
        if slot is None:
            self._check_backoff(spec.name)
            # Reading the header first refuses a corrupt file before anything
            # is evicted for it.
            estimate = estimate_memory(spec)
            replicas = spec.replicas or self.settings.replicas
            if replicas > 1 and not spec.threads:
                # The replicas share the cores: one engine thread set each.
                spec = dataclasses.replace(spec, threads=max(1, (os.cpu_count() or 1) // replicas))
            slot = self.slots[spec.name] = ModelSlot(spec=spec, keep_alive=self.settings.idle_timeout, estimate=estimate)
        if "keep_alive" in msg:
            slot.keep_alive = None if msg["keep_alive"] < 0 else float(msg["keep_alive"])
        self._ensure_replicas(slot)
        req = Request(self.next_rid, client, msg["id"], msg["op"], msg, time.monotonic(), model=slot.name)
        req.caused_load = slot.state in (State.WAITING, State.LOADING)
        if msg["op"] == protocol.LOAD:
            if slot.state in (State.READY, State.BUSY):
                self._reply(client, self._load_done(req, slot))
                return
            slot.load_waiters.append(req)
        else:
            if len(slot.queue) >= self.settings.max_queue:
                raise Busy(f"{slot.name} has {len(slot.queue)} requests waiting; try again later")
            slot.queue.append(req)
        self.next_rid += 1
        if client:  # a preload is no client's request
            self.requests_total += 1
        self.requests[req.rid] = req
        self.by_client[(client, req.id)] = req.rid
        self._schedule()

    def _check_backoff(self, name: str) -> None:
        left = policy.backoff_left(self.crashes.get(name, []), time.monotonic(), CRASH_LIMIT, CRASH_WINDOW_S, CRASH_BACKOFF_S)
        if left is not None:
            raise CrashLoop(
                f"{name} failed {CRASH_LIMIT} times within {CRASH_WINDOW_S:.0f} s; corral will not restart it "
                f"for another {left:.0f} s (see `corral logs {name}`)"
            )

    def _ensure_replicas(self, primary: ModelSlot) -> None:
        """A model with N replicas has N-1 more slots, ``model#2`` ...,
        sharing its queue: each takes the next request when its worker is
        free. They spawn when requests queue up and expire when idle."""
        for i in range(2, (primary.spec.replicas or self.settings.replicas) + 1):
            key = f"{primary.name}#{i}"
            replica = self.slots.get(key)
            if replica is None:
                self.slots[key] = ModelSlot(
                    spec=dataclasses.replace(primary.spec, name=key),
                    group=primary.name,
                    queue=primary.queue,
                    keep_alive=primary.keep_alive,
                    estimate=primary.estimate,
                )
            else:
                replica.keep_alive = primary.keep_alive
                if replica.queue is not primary.queue and not replica.queue and not replica.running:
                    replica.queue = primary.queue  # the primary was made anew

    def _group(self, model: str) -> list[ModelSlot]:
        """A model's slots: its primary and its replicas."""
        return [s for s in self.slots.values() if s.group == model]

    def preload(self, fields: dict) -> None:
        """Start loading a model before any client asks: a load request with
        nobody to answer. A problem is only logged; the client that asked
        for the preload hears about it when it sends its own request."""
        try:
            protocol.parse_client_request(protocol.request(protocol.LOAD, 0, **fields))
            self._on_model_request(b"", {"id": 0, "op": protocol.LOAD, **fields})
        except CorralError as exc:
            log.info("preload refused", model=fields.get("model"), error=exc.message)

    def _on_unload(self, client: bytes, msg: dict) -> None:
        if msg.get("all"):
            targets = list(self.slots.values())
        elif "model" in msg:
            name = catalog.canonical_name(msg["model"])
            if name not in self.slots:
                # a path given relatively by the user was made absolute by the client
                name = catalog.resolve(msg["model"], self.settings).name
            targets = self._group(name)
        else:
            raise BadRequest("unload needs a model or all")
        for slot in targets:
            self._unload(slot, "unloaded")
        unloaded = sorted({s.group for s in targets})
        self._reply(client, protocol.event(protocol.DONE, id=msg["id"], unloaded=unloaded))

    def _on_ps(self, client: bytes, msg: dict) -> None:
        self._reply(client, protocol.event(protocol.RESULT, id=msg["id"], result=[describe_slot(s) for s in self.slots.values()]))

    def _on_status(self, client: bytes, msg: dict) -> None:
        facts = supervisor_facts(self.settings, self.started, self.started_wall, self.slots.values(), self.requests_total)
        self._reply(client, protocol.event(protocol.RESULT, id=msg["id"], result=facts))

    def _on_cancel(self, client: bytes, msg: dict) -> None:
        rid = self.by_client.get((client, msg["id"]))
        req = self.requests.get(rid) if rid is not None else None
        if req is None:
            return  # already finished: its stream has ended anyway
        for replica in self._group(req.model):
            if req.rid in replica.running:
                self._send_worker(replica, protocol.command(protocol.CANCEL, rid=req.rid))
                return
        slot = self.slots.get(req.model)
        # Not started yet: take it out of line and end its stream here.
        if slot is not None:
            if req in slot.queue:
                slot.queue.remove(req)
            if req in slot.load_waiters:
                slot.load_waiters.remove(req)
        self._forget(req)
        self._reply(client, protocol.event(protocol.DONE, id=req.id, stopped="cancelled"))

    def _on_shutdown(self, client: bytes, msg: dict) -> None:
        self.shutdown_requests.append(Request(0, client, msg["id"], msg["op"], msg, time.monotonic()))
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        log.info("shutting down", models=len(self.slots))
        if not self.shutdown_requests:
            self.shutdown_requests.append(Request(0, b"", 0, protocol.SHUTDOWN, {}, time.monotonic()))
        for slot in list(self.slots.values()):
            self._unload(slot, "the supervisor is shutting down")

    # -- scheduling ------------------------------------------------------

    def _schedule(self) -> None:
        """Give waiting models a worker when there is room, make room when
        there is not, and start the next request on every idle worker."""
        waiting = [s for s in self.slots.values() if s.wants_worker]
        waiting.sort(key=lambda s: s.first_arrival())
        for slot in waiting:
            admission = policy.admit(slot, self.slots.values(), self.settings.max_loaded_models, self._budget())
            if admission.refuse:
                log.info("refused: not enough memory", model=slot.name, need=slot.need_bytes)
                self._fail_waiting(slot, InsufficientMemory(admission.refuse))
                del self.slots[slot.name]
                continue
            for name in admission.evict:
                log.info("evicting to make room", model=name, for_model=slot.name)
                self._stop(self.slots[name])
            if admission.spawn:
                self._spawn(slot)
        # First every idle worker takes one request, then each takes one more
        # to hold ready: replicas sharing a queue all get work first.
        for depth in (1, PIPELINE_DEPTH):
            for slot in list(self.slots.values()):
                self._pump(slot, depth)

    def _budget(self) -> int:
        """Memory for all models: the configured budget, or what the machine
        has available plus what our own workers already hold."""
        if self.settings.memory_budget is not None:
            return self.settings.memory_budget
        held = sum(s.held_bytes for s in self.slots.values() if s.has_worker)
        return psutil.virtual_memory().available + held

    def _watch_memory(self) -> None:
        """Sample each worker's RSS; stop one that has grown far past its
        estimate while the budget is exceeded, rather than let the machine swap."""
        for slot in self.slots.values():
            if slot.worker is not None:
                slot.rss_bytes = slot.worker.rss_bytes() or 0
        if self.settings.memory_budget is not None:
            budget = self.settings.memory_budget
        else:
            vm = psutil.virtual_memory()
            if vm.available > vm.total * LOW_MEMORY_FRACTION:
                return
            budget = 0  # nearly out of memory: any overgrown worker goes
        for slot in policy.overgrown(self.slots.values(), budget, GROWTH_LIMIT):
            mib = 1024 * 1024
            message = (
                f"the worker for {slot.name} grew to {slot.rss_bytes / mib:.0f} MiB, far past its estimate of "
                f"{slot.need_bytes / mib:.0f} MiB, while the memory budget was exceeded; it was stopped"
            )
            log.warning("worker over its memory estimate; killing", model=slot.name, rss=slot.rss_bytes)
            slot.kill_error = InsufficientMemory(message)
            slot.worker.kill(message)

    def _pump(self, slot: ModelSlot, depth: int = PIPELINE_DEPTH) -> None:
        while slot.state in (State.READY, State.BUSY) and len(slot.running) < depth and slot.queue:
            if slot.running and not all(_is_short(r) for r in slot.running.values()):
                return
            if policy.should_yield(slot, self.slots.values(), self.settings.max_loaded_models):
                return
            req = slot.queue.popleft()
            slot.running[req.rid] = req
            slot.state = State.BUSY
            slot.expires_at = None
            fields = {"prompt": req.msg["prompt"]} if req.op == protocol.GENERATE else {"messages": req.msg["messages"]}
            command = protocol.command(req.op, rid=req.rid, id=req.id, options=req.msg.get("options", {}), **fields)
            self._send_worker(slot, command, data=True)

    def _spawn(self, slot: ModelSlot) -> None:
        identity = f"w{os.getpid()}-{self.next_worker}".encode()
        self.next_worker += 1
        slot.load_error = None
        try:
            worker = WorkerProcess.spawn(slot.spec, self.settings, identity, self.log_level)
        except OSError as exc:
            self._fail_waiting(slot, ModelLoadFailed(f"could not start a worker for {slot.name}: {exc}"))
            return
        slot.worker = worker
        slot.state = State.LOADING
        self.by_identity[identity] = slot
        self.by_identity[identity + protocol.WORKER_DATA_SUFFIX] = slot  # its stream of tokens
        self.by_pidfd[worker.pidfd] = slot
        self.poller.register(worker.pidfd, zmq.POLLIN)

    def _stop(self, slot: ModelSlot) -> None:
        if slot.worker is None or slot.state == State.STOPPING:
            return
        slot.state = State.STOPPING
        # After the work already sent, on the same socket: it ends the worker's loop.
        self._send_worker(slot, protocol.command(protocol.SHUTDOWN), data=True)
        slot.worker.begin_stop(time.monotonic(), self.settings.stop_timeout)

    def _unload(self, slot: ModelSlot, why: str) -> None:
        """Unload on request: queued requests end, the running one is cancelled."""
        self._fail_waiting(slot, Cancelled(f"{slot.name} was {why}" if why == "unloaded" else why))
        for rid in slot.running:
            self._send_worker(slot, protocol.command(protocol.CANCEL, rid=rid))
        if slot.worker is None:
            self.slots.pop(slot.name, None)
        else:
            self._stop(slot)

    def _fail_waiting(self, slot: ModelSlot, exc: CorralError) -> None:
        while slot.queue:
            self._fail(slot.queue.popleft(), exc)
        for req in slot.load_waiters:
            self._fail(req, exc)
        slot.load_waiters.clear()

    # -- workers ---------------------------------------------------------

    def _on_worker(self, identity: bytes, frame: bytes) -> None:
        slot = self.by_identity.get(identity)
        if slot is None:
            return  # a worker we already gave up on
        slot.worker.heard(time.monotonic())
        try:
            msg = protocol.parse_worker_event(frame)
        except BadRequest as exc:
            log.warning("bad frame from worker", model=slot.name, error=exc.message)
            return
        ev = msg["ev"]
        if ev == protocol.TOKEN:
            req = slot.running.get(msg["rid"])
            if req is not None and not self._reply(req.client, frame):
                # Nobody is reading: stop spending compute on it.
                self._send_worker(slot, protocol.command(protocol.CANCEL, rid=req.rid))
        elif ev == protocol.READY:
            self._on_ready(slot, msg)
        elif ev in (protocol.DONE, protocol.ERROR):
            if slot.state == State.LOADING:
                slot.load_error = msg.get("message")  # the worker exits next; its pidfd ends the load
            elif msg["rid"] in slot.running:
                self._finish(slot, msg, frame)

    def _on_ready(self, slot: ModelSlot, msg: dict) -> None:
        if slot.state != State.LOADING:
            return
        slot.info = {k: v for k, v in msg.items() if k not in ("v", "ev")}
        slot.state = State.READY
        slot.last_used = time.monotonic()
        slot.expires_at = policy.expiry(slot.keep_alive, slot.last_used)
        log.info("model ready", model=slot.name, pid=slot.worker.pid, load_ms=round(msg.get("load_ms", 0), 1))
        for req in slot.load_waiters:
            self._forget(req)
            self._reply(req.client, self._load_done(req, slot))
        slot.load_waiters.clear()
        self._schedule()

    def _load_done(self, req: Request, slot: ModelSlot) -> bytes:
        return protocol.event(protocol.DONE, id=req.id, model=slot.name, pid=slot.worker.pid, load_ms=slot.info.get("load_ms") if req.caused_load else 0.0)

    def _finish(self, slot: ModelSlot, msg: dict, frame: bytes) -> None:
        req = slot.running.pop(msg["rid"])
        if msg["ev"] == protocol.DONE and req.caused_load:
            # The one reply that says more than the worker knew.
            out = {k: v for k, v in msg.items() if k != "v"}
            frame = protocol.encode({**out, "load_ms": slot.info.get("load_ms", 0.0)})
        self._forget(req)
        self._reply(req.client, frame)  # it carries the client's id already
        now = time.monotonic()
        slot.served += 1
        slot.last_used = now
        if slot.state == State.BUSY and not slot.running:
            slot.state = State.READY
            # The idle timer restarts when the last request ends.
            slot.expires_at = None if slot.queue else policy.expiry(slot.keep_alive, now)
        self._schedule()

    def _on_worker_exit(self, slot: ModelSlot) -> None:
        worker = slot.worker
        worker.reap()
        self.poller.unregister(worker.pidfd)
        del self.by_pidfd[worker.pidfd]
        del self.by_identity[worker.identity]
        del self.by_identity[worker.identity + protocol.WORKER_DATA_SUFFIX]
        how = worker.describe_exit()
        was = slot.state
        kill_error, slot.kill_error = slot.kill_error, None
        slot.worker, slot.state, slot.info, slot.rss_bytes = None, State.WAITING, {}, 0
        if was == State.STOPPING:
            log.info("worker stopped", model=slot.name, pid=worker.pid, how=how)
        elif kill_error is None:
            self.crashes.setdefault(slot.name, []).append(time.monotonic())
        if was == State.LOADING:
            reason = slot.load_error or f"the worker {how}; last output: {worker.stderr_tail()}"
            log.warning("load failed", model=slot.name, reason=reason)
            self._fail_waiting(slot, kill_error or ModelLoadFailed(f"{slot.name} failed to load: {reason}"))
        elif was != State.STOPPING:
            log.warning("worker crashed", model=slot.name, pid=worker.pid, how=how)
        if slot.running:
            tail = worker.stderr_tail()
            error = kill_error or WorkerCrashed(f"the worker for {slot.name} {how}" + (f"; its last output: {tail}" if tail else ""))
            for req in slot.running.values():
                self._fail(req, error)
            slot.running.clear()
        if slot.wants_worker:
            try:
                self._check_backoff(slot.name)
            except CrashLoop as exc:
                self._fail_waiting(slot, exc)
        if not slot.wants_worker:
            del self.slots[slot.name]
        self._schedule()

    def _close(self) -> None:
        for slot in self.slots.values():
            if slot.worker is not None:
                slot.worker.kill("was killed because the supervisor stopped")
        self.front.close(0)
        self.back.close(0)
        self.ctx.term()
        for path in (self.settings.socket_path, self.settings.workers_socket_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        log.info("supervisor stopped")
