"""Workers' lives as the supervisor sees them: spawn, ready, the frames of
their work, exit, and the stop ladder. Functions of the supervisor (``sup``:
its table, settings and effects); the event loop calls them."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

import msgspec

from corral.configs.catalog import BATCHING_BACKENDS
from corral.supervisor import policy, protocol
from corral.supervisor.errors import (
    Cancelled,
    CorralError,
    CrashLoop,
    InsufficientMemory,
    ModelLoadFailed,
    WorkerCrashed,
)
from corral.supervisor.logs import get_logger
from corral.supervisor.memory import worker_sequences
from corral.supervisor.table import Model, Request, State, Worker

if TYPE_CHECKING:
    from corral.supervisor.server import Supervisor

log = get_logger()
# Read once: os.cpu_count() parses /sys on every call, and the scheduler
# shares the cores after every event (it was 17% of the supervisor's time at
# 8 requests in flight).
CORES = os.cpu_count() or 1

# How long a new worker may take to say anything at all (interpreter start
# and imports) before it is taken for hung; heartbeats cover the rest.
STARTUP_GRACE_S = 60.0
# With the budget exceeded, a worker this many times past its estimate is
# stopped before the machine starts swapping.
GROWTH_LIMIT = 1.5
# Under the automatic budget, "exceeded" means the machine is this close to
# running out of memory.
LOW_MEMORY_FRACTION = 0.02


def note(sup: "Supervisor", req: Request, text: str) -> None:
    """A line about one request: in the log at debug level, and to its client
    as a ``log`` event when it asked for them (``--debug``)."""
    log.debug(text, rid=req.rid, model=req.model)
    if req.debug:
        sup.reply(req.client, protocol.event(protocol.LOG, id=req.id, line=text))


def spawn(sup: "Supervisor", model: Model) -> None:
    identity = f"w{os.getpid()}-{sup.next_worker}".encode()
    sup.next_worker += 1
    threads = policy.threads_per_worker(CORES, model.replicas, model.spec.threads)
    launch_spec = dataclasses.replace(model.spec, threads=threads, parallel=worker_sequences(model.spec, sup.settings.parallel))
    try:
        handle = sup.launcher.spawn(launch_spec, identity)
    except OSError as exc:
        fail_waiting(sup, model, ModelLoadFailed(f"could not start a worker for {model.name}: {exc}"))
        return
    worker = Worker(key=model.next_key(), model=model, spec=model.spec, handle=handle)
    model.workers.append(worker)
    sup.table.workers[identity] = worker
    sup.table.workers[identity + protocol.WORKER_DATA_SUFFIX] = worker  # the socket of its work
    sup.watch(worker)
    sup.restarter.spawned(model.name, time.monotonic())
    for req in (*model.queue, *model.load_waiters):
        note(sup, req, f"started worker pid {handle.pid} for {model.name}")


def on_frame(sup: "Supervisor", worker: Worker, frame: bytes) -> None:
    worker.handle.heard(time.monotonic())
    try:
        ev = protocol.parse_worker_event(frame)
    except CorralError as exc:
        log.warning("dropped a bad frame from a worker", model=worker.key, error=exc.message)
        return
    if isinstance(ev, (protocol.Token, protocol.Embedding)):
        req = worker.running.get(ev.rid)
        if req is None or ev.id != req.id:
            return  # a request that ended here already (cancelled, client gone)
        if req.first_token is None:
            req.first_token = time.monotonic()
            note(sup, req, f"first output {(req.first_token - req.sent) * 1000:.1f} ms after it reached the worker")
        if not sup.reply(req.client, frame):
            # Nobody is reading: stop spending compute on it.
            sup.send_worker(worker, protocol.command(protocol.CANCEL, rid=req.rid))
    elif isinstance(ev, protocol.Ready):
        on_ready(sup, worker, ev)
    elif isinstance(ev, (protocol.Done, protocol.Error)):
        if worker.state == State.LOADING:
            worker.load_error = getattr(ev, "message", None)  # it exits next; its sentinel ends the load
        elif ev.rid in worker.running:
            finish(sup, worker, ev, frame)


def on_ready(sup: "Supervisor", worker: Worker, ev: protocol.Ready) -> None:
    if worker.state != State.LOADING:
        return
    model, now = worker.model, time.monotonic()
    worker.info = {k: v for k, v in protocol.to_builtins(ev).items() if k not in ("v", "ev", "id", "rid")}
    worker.capacity = ev.parallel
    worker.threads = ev.threads if worker.spec.backend in BATCHING_BACKENDS else 0
    worker.state = State.READY
    model.started_since_ready = 0
    worker.last_used = model.last_used = now
    model.expires_at = policy.expiry(model.keep_alive, now)
    log.info("model ready", model=worker.key, pid=worker.handle.pid, load_ms=round(ev.load_ms, 1))
    for req in model.load_waiters:
        note(sup, req, f"{model.name} ready: loaded in {ev.load_ms:.0f} ms by pid {worker.handle.pid}")
        sup.table.forget(req)
        sup.reply(req.client, load_done(req, worker))
    model.load_waiters.clear()
    sup.schedule()


def load_done(req: Request, worker: Worker) -> bytes:
    load_ms = worker.info.get("load_ms", 0.0) if req.caused_load else 0.0
    return protocol.event(protocol.DONE, id=req.id, model=worker.model.name, pid=worker.handle.pid, load_ms=load_ms)


def send_work(sup: "Supervisor", worker: Worker, req: Request) -> None:
    model = worker.model
    worker.running[req.rid] = req
    worker.state = State.BUSY
    model.expires_at = None
    model.started_since_ready += 1
    req.sent = time.monotonic()
    sup.send_worker(worker, protocol.work(req.rid, req.msg), data=True)
    if req.debug:
        note(sup, req, f"sent to worker pid {worker.handle.pid} after {(req.sent - req.arrived) * 1000:.1f} ms waiting")


def finish(sup: "Supervisor", worker: Worker, ev: protocol.Done | protocol.Error, frame: bytes) -> None:
    req = worker.running.pop(ev.rid)
    model, now = worker.model, time.monotonic()
    if isinstance(ev, protocol.Done):
        if req.debug:
            usage, timings = ev.usage or protocol.Usage(), ev.timings or protocol.Timings()
            note(sup, req, f"done ({ev.stopped}): {usage.prompt_tokens} prompt + {usage.completion_tokens} tokens, "
                           f"{timings.tokens_per_s:.1f} tokens/s, {(now - req.arrived) * 1000:.0f} ms in all")
        if req.caused_load:
            # The one reply that says more than the worker knew.
            frame = protocol.encode(msgspec.structs.replace(ev, load_ms=worker.info.get("load_ms", 0.0)))
    sup.table.forget(req)
    sup.reply(req.client, frame)  # it carries the client's id already
    model.served += 1
    worker.served += 1
    sup.restarter.served(model.name)
    worker.last_used = model.last_used = now
    if worker.state == State.BUSY and not worker.running:
        worker.state = State.READY
    if not model.running and not model.has_work:
        # The idle timer restarts when the last request ends.
        model.expires_at = policy.expiry(model.keep_alive, now)
    sup.schedule()


def on_exit(sup: "Supervisor", worker: Worker) -> None:
    """The worker's sentinel fired: it has exited, however it ended."""
    handle, model, now = worker.handle, worker.model, time.monotonic()
    handle.reap()
    sup.table.workers.pop(worker.identity, None)
    sup.table.workers.pop(worker.identity + protocol.WORKER_DATA_SUFFIX, None)
    if worker in model.workers:
        model.workers.remove(worker)
    how, was = handle.describe_exit(), worker.state
    if policy.counts_as_crash(was, worker.kill_error is not None):
        sup.restarter.failed(model.name, now)
    if was == State.STOPPING:
        log.info("worker stopped", model=worker.key, pid=handle.pid, how=how)
    elif was == State.LOADING:
        reason = worker.load_error or f"the worker {how}; last output: {handle.stderr_tail()}"
        log.warning("load failed", model=worker.key, reason=reason)
        if worker.load_error is None and (handle.returncode or 0) < 0:
            # Killed by a signal (the OOM killer, a user): a crash, not a
            # model that cannot load.
            error = WorkerCrashed(f"the worker for {model.name} {how} while loading")
        else:
            error = ModelLoadFailed(f"{model.name} failed to load: {reason}")
        if not model.fresh_workers:
            fail_waiting(sup, model, worker.kill_error or error)
    else:
        log.warning("worker crashed", model=worker.key, pid=handle.pid, how=how)
    if worker.running and was == State.STOPPING:
        # Stopped with answers in flight: an unload or shutdown, which
        # cancelled them. Their last frames may still be on their way when
        # the exit is seen; they end as cancelled either way.
        for req in worker.running.values():
            sup.table.forget(req)
            sup.reply(req.client, protocol.event(protocol.DONE, id=req.id, stopped="cancelled"))
        worker.running.clear()
    if worker.running:
        tail = handle.stderr_tail()
        error = worker.kill_error or WorkerCrashed(f"the worker for {model.name} {how}" + (f"; its last output: {tail}" if tail else ""))
        for req in worker.running.values():
            if policy.retry_after_crash(req, worker.kill_error is not None):
                # It had produced nothing yet: the client cannot tell a
                # fresh start from the first, so it gets one.
                req.retried, req.sent = True, None
                model.queue.append(req)
                note(sup, req, f"its worker {how} before it started; queued again")
            else:
                fail(sup, req, error)
        worker.running.clear()
    # Before schedule() (which drops the model from the table if nothing is
    # left of it), so that a failure there cannot keep an unload unanswered;
    # the client's next request is read only after both.
    for held in sup.table.released_by(worker.identity):
        sup.reply(held.client, held.frame)
    sup.schedule()


def fail(sup: "Supervisor", req: Request, exc: CorralError) -> None:
    sup.table.forget(req)
    sup.reply(req.client, protocol.error(req.id, exc))


def fail_waiting(sup: "Supervisor", model: Model, exc: CorralError) -> None:
    """End every request of ``model`` that has not reached a worker."""
    while model.queue:
        fail(sup, model.queue.popleft(), exc)
    for req in model.load_waiters:
        fail(sup, req, exc)
    model.load_waiters.clear()


def check_backoff(sup: "Supervisor", name: str) -> None:
    left = sup.restarter.backoff_left(name, time.monotonic())
    if left is not None:
        raise CrashLoop(f"{name} {sup.restarter.why(name)}; corral will not restart it for another {left:.0f} s "
                        f"(see `corral logs {name}`)")


def stop(sup: "Supervisor", worker: Worker) -> None:
    if worker.state == State.STOPPING:
        return
    worker.state = State.STOPPING
    # After the work already sent, on the same socket: it ends the worker's loop.
    sup.send_worker(worker, protocol.command(protocol.SHUTDOWN), data=True)
    worker.handle.begin_stop(time.monotonic(), sup.settings.stop_timeout)


def unload(sup: "Supervisor", model: Model, why: str) -> None:
    """Unload on request: waiting requests end, running ones are cancelled."""
    fail_waiting(sup, model, Cancelled(f"{model.name} was {why}" if why == "unloaded" else why))
    for worker in model.workers:
        for rid in worker.running:
            sup.send_worker(worker, protocol.command(protocol.CANCEL, rid=rid))
        stop(sup, worker)


def tick(sup: "Supervisor", now: float) -> None:
    """Time-driven work: heartbeats and hang checks, the memory watch,
    idle expiry and the stop ladder."""
    settings = sup.settings
    if now >= sup.next_beat:
        sup.next_beat = now + settings.heartbeat_interval
        for worker in sup.table.all_workers():
            sup.send_worker(worker, sup.beat)
            check_alive(worker, now, settings.heartbeat_interval * settings.heartbeat_liveness)
        watch_memory(sup)
    for model in list(sup.table.models.values()):
        if policy.expired(model, now):
            log.info("idle timeout", model=model.name)
            for worker in model.workers:
                stop(sup, worker)
    for worker in sup.table.all_workers():
        worker.handle.advance_stop(now, settings.stop_timeout)


def check_alive(worker: Worker, now: float, limit: float) -> None:
    handle = worker.handle
    if not handle.heard_any:
        limit = max(limit, STARTUP_GRACE_S)
    if handle.kill_reason is None and policy.hung(handle.last_heard, now, limit):
        silent = now - handle.last_heard
        log.warning("worker hung; killing", model=worker.key, pid=handle.pid, silent_s=round(silent, 1))
        handle.kill(f"stopped answering (no heartbeat for {silent:.0f} s) and was killed")


def watch_memory(sup: "Supervisor") -> None:
    """Sample each worker's RSS; stop one that has grown far past its
    estimate while the budget is exceeded, rather than let the machine swap."""
    import psutil

    workers = sup.table.all_workers()
    for worker in workers:
        worker.rss_bytes = worker.handle.rss_bytes() or 0
    if not workers:
        return
    budget = sup.settings.memory_budget
    if budget is None:
        vm = psutil.virtual_memory()
        if vm.available > vm.total * LOW_MEMORY_FRACTION:
            return
        budget = 0  # nearly out of memory: any overgrown worker goes
    mib = 1024 * 1024
    for worker in policy.overgrown(sup.table.models.values(), budget, GROWTH_LIMIT):
        message = (
            f"the worker for {worker.model.name} grew to {worker.rss_bytes / mib:.0f} MiB, far past its estimate of "
            f"{worker.need_bytes / mib:.0f} MiB, while the memory budget was exceeded; it was stopped"
        )
        log.warning("worker over its memory estimate; killing", model=worker.key, rss=worker.rss_bytes)
        worker.kill_error = InsufficientMemory(message)
        worker.handle.kill(message)
