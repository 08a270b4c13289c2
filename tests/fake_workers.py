"""The supervisor's real event loop with workers the test plays itself.

``FakeLauncher`` is the launcher seam's other side: instead of starting a
process it hands the loop a ``FakeWorker`` with the same handle interface
(a sentinel fd that becomes readable when the "process" exits, the stop
ladder, the exit description) and two real DEALER sockets on the workers
socket, which the test uses to answer as a worker would. The loop runs in
the test's own thread, one ``step`` at a time: races are played out in a
chosen order, with no sleeps.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable

import zmq

from corral.supervisor import protocol

_pids = itertools.count(4_000_000)


class FakeWorker:
    def __init__(self, spec: Any, identity: bytes, endpoint: str, ctx: zmq.Context):
        self.spec, self.identity, self.pid = spec, identity, next(_pids)
        self._r, self._w = os.pipe()
        self.sentinel = self._r
        self.control = ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.IDENTITY, identity)
        self.data = ctx.socket(zmq.DEALER)
        self.data.setsockopt(zmq.IDENTITY, identity + protocol.WORKER_DATA_SUFFIX)
        for sock in (self.control, self.data):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        self.last_heard = time.monotonic()
        self.heard_any = False
        self.kill_reason: str | None = None
        self.stop_deadline: float | None = None
        self.returncode: int | None = None
        self.alive = True
        self.asked_to_stop = False  # it has received the shutdown command

    # -- the handle the supervisor uses -------------------------------------

    def heard(self, now: float) -> None:
        self.last_heard, self.heard_any = now, True

    def reap(self) -> int:
        os.close(self._r)
        return self.returncode

    def describe_exit(self) -> str:
        return self.kill_reason or f"exited with code {self.returncode}"

    def stderr_tail(self) -> str:
        return ""

    def rss_bytes(self) -> int:
        return 0

    def kill(self, reason: str) -> None:
        self.kill_reason = reason
        self.exit(-9)

    def begin_stop(self, now: float, timeout: float) -> None:
        self.stop_deadline = now + timeout

    def advance_stop(self, now: float, timeout: float) -> None:
        pass  # the test decides when a stopping fake exits

    # -- what the test does as the worker -----------------------------------

    def exit(self, code: int = 0) -> None:
        if self.alive:
            self.alive, self.returncode = False, code
            os.close(self._w)
            self.control.close(0)
            self.data.close(0)

    def send(self, ev: str, **fields: Any) -> None:
        self.data.send(protocol.event(ev, **fields))

    def ready(self, parallel: int = 1) -> None:
        self.send(protocol.READY, pid=self.pid, load_ms=1.0, context_length=self.spec.context_length, parallel=parallel)

    def recv(self, timeout_ms: int = 0) -> Any | None:
        """The next command on the data socket (work, shutdown), or None."""
        if not self.alive or not self.data.poll(timeout_ms):
            return None
        cmd = protocol.parse_worker_command(self.data.recv())
        self.asked_to_stop |= isinstance(cmd, protocol.WorkShutdown)
        return cmd

    def answer(self, work: Any, text: str = "ok", stopped: str = "stop") -> None:
        self.send(protocol.TOKEN, rid=work.rid, id=work.request.id, text=text)
        self.send(protocol.DONE, rid=work.rid, id=work.request.id, stopped=stopped, usage={"completion_tokens": 1})


class FakeLauncher:
    def __init__(self, settings: Any):
        self.endpoint = settings.workers_endpoint
        self.ctx = zmq.Context.instance()
        self.spawned: list[FakeWorker] = []

    def spawn(self, spec: Any, identity: bytes) -> FakeWorker:
        worker = FakeWorker(spec, identity, self.endpoint, self.ctx)
        self.spawned.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.spawned:
            worker.exit()


class RawClient:
    """A client socket speaking the protocol directly."""

    def __init__(self, settings: Any):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(settings.endpoint)
        self.ids = itertools.count(1)
        self.replies: dict[Any, list] = {}

    def send(self, op: str, id: Any = None, **fields: Any) -> Any:
        id = next(self.ids) if id is None else id
        self.sock.send(protocol.request(op, id, **fields))
        return id

    def pump(self) -> None:
        while self.sock.poll(0):
            msg = protocol.parse_reply(self.sock.recv())
            self.replies.setdefault(msg.id, []).append(msg)

    def last(self, id: Any) -> Any | None:
        self.pump()
        got = self.replies.get(id)
        return got[-1] if got else None

    def ended(self, id: Any) -> Any | None:
        """The final reply of request ``id`` (done, result or error), if any."""
        msg = self.last(id)
        return msg if isinstance(msg, (protocol.Done, protocol.Error, protocol.Result)) else None

    def close(self) -> None:
        self.sock.close(0)


def run_until(sup: Any, condition: Callable[[], Any], guard_s: float = 30.0) -> Any:
    """Turn the loop until ``condition()`` holds (the guard only stops a hang)."""
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        sup.step(20)
    raise AssertionError("condition not reached")


def serve_until(sup: Any, workers: list[FakeWorker], condition: Callable[[], Any]) -> Any:
    """Turn the loop, every live fake answering whatever work it gets, until
    ``condition()`` holds."""

    def step() -> Any:
        for worker in list(workers):
            while (cmd := worker.recv()) is not None:
                if isinstance(cmd, protocol.Work):
                    worker.answer(cmd)
        return condition()

    return run_until(sup, step)
