"""The process wrapper around a backend: sockets, heartbeats, cancel, stats.

Two threads, each with its own DEALER socket to the supervisor (a ZeroMQ
socket must stay in one thread). The I/O thread's control socket gets
heartbeats and cancels, beats every interval and notices a silent
supervisor; it never waits on the model, so a long prompt evaluation
(llama.cpp releases the GIL) never looks like a hang. The main thread's
data socket (identity + ``/data``) receives the work itself (generate,
chat, shutdown, in order) and streams the replies straight back: no hop
between threads per request or per token, which on a 2-core machine would
take CPU from the decoding threads.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import zmq

from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, GenerationFailed, ModelLoadFailed
from corral.supervisor.logs import get_logger
from corral.workers.backend import Backend, Sampling, Usage

log = get_logger()

# The main thread's word to the I/O thread that the worker is done.
_STOP = "inproc://stop"


class WorkerRuntime:
    def __init__(
        self,
        backend: Backend,
        *,
        endpoint: str,
        identity: bytes,
        heartbeat_interval: float,
        heartbeat_liveness: int,
    ):
        self.backend = backend
        self.endpoint = endpoint
        self.identity = identity
        self.heartbeat_interval = heartbeat_interval
        self.silence_limit = heartbeat_interval * heartbeat_liveness
        self.ctx = zmq.Context()
        # rids to stop; set.add and `in` are atomic under the GIL
        self.cancelled: set[int] = set()
        self._io_ready = threading.Event()
        self._data: zmq.Socket | None = None

    # -- main thread ---------------------------------------------------------

    def serve(self) -> int:
        io = threading.Thread(target=self._io_loop, name="corral-io", daemon=True)
        io.start()
        self._io_ready.wait()
        self._data = self.ctx.socket(zmq.DEALER)
        self._data.setsockopt(zmq.IDENTITY, self.identity + protocol.WORKER_DATA_SUFFIX)
        self._data.setsockopt(zmq.SNDHWM, 0)  # a stream is bounded; never drop a token
        self._data.setsockopt(zmq.LINGER, 2000)  # deliver the last frames before exit
        self._data.connect(self.endpoint)
        code = self._load_and_serve()
        stop = self.ctx.socket(zmq.PAIR)
        stop.connect(_STOP)
        stop.send(b"")
        io.join(timeout=5)
        stop.close(0)
        self._data.close()
        self.ctx.term()
        return code

    def _load_and_serve(self) -> int:
        started = time.monotonic()
        try:
            info = self.backend.load()
        except Exception as exc:  # any engine error is a failed load, reported, not raised
            log.error("load failed", error=str(exc), exc_info=True)
            err = ModelLoadFailed(f"could not load {self.backend.spec['path']}: {exc}")
            self._send(protocol.event(protocol.ERROR, rid=0, code=err.code, message=err.message))
            return 1
        load_ms = (time.monotonic() - started) * 1000
        log.info("model loaded", load_ms=round(load_ms, 1), **info)
        self._send(protocol.event(protocol.READY, pid=os.getpid(), load_ms=load_ms, **info))
        while True:
            job = _command(self._data.recv())
            if job is None:
                continue
            if job["op"] == protocol.SHUTDOWN:
                break
            if job["op"] in (protocol.GENERATE, protocol.CHAT):
                self._generate(job)
        self.backend.close()
        log.info("worker stopping")
        return 0

    def _send(self, frame: bytes) -> None:
        self._data.send(frame)

    def _generate(self, job: dict[str, Any]) -> None:
        rid, cid = job["rid"], job.get("id")
        usage = Usage()
        if rid in self.cancelled:  # cancelled while it waited in this worker
            self.cancelled.discard(rid)
            self._send(protocol.event(protocol.DONE, rid=rid, id=cid, stopped="cancelled", usage={}, timings={}))
            return
        started = time.monotonic()
        first = None
        try:
            sampling = Sampling.from_options(job["options"], self.backend.spec.get("stop") or ())
            if job["op"] == protocol.CHAT:
                prompt, template_stop = self.backend.chat_prompt(job["messages"])
                sampling.stop = list(dict.fromkeys([*sampling.stop, *template_stop]))
            else:
                prompt = job["prompt"]
            pieces = self.backend.stream(prompt, sampling, usage)
            try:
                for piece in pieces:
                    if rid in self.cancelled:
                        usage.finish_reason = "cancelled"
                        break
                    if first is None:
                        first = time.monotonic()
                    self._send(protocol.event(protocol.TOKEN, rid=rid, id=cid, text=piece))
            finally:
                pieces.close()
        except CorralError as exc:
            self._send(protocol.error(cid, exc, rid=rid))
            return
        except ValueError as exc:  # the engine's word for a prompt it cannot take
            self._send(protocol.error(cid, BadRequest(str(exc)), rid=rid))
            return
        except Exception as exc:
            log.error("generation failed", rid=rid, exc_info=True)
            self._send(protocol.error(cid, GenerationFailed(f"generation failed: {exc}"), rid=rid))
            return
        finally:
            self.cancelled.discard(rid)
        ended = time.monotonic()
        decode_s = ended - (first or ended)
        # tokens/s over the decode phase: the first token ends prompt evaluation
        tps = (usage.completion_tokens - 1) / decode_s if decode_s > 0 and usage.completion_tokens > 1 else 0.0
        self._send(
            protocol.event(
                protocol.DONE,
                rid=rid,
                id=cid,
                stopped=usage.finish_reason,
                usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                timings={
                    "ttft_ms": ((first or ended) - started) * 1000,
                    "total_ms": (ended - started) * 1000,
                    "tokens_per_s": tps,
                },
            )
        )

    # -- I/O thread ----------------------------------------------------------

    def _io_loop(self) -> None:
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, self.identity)
        dealer.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.endpoint)
        stop = self.ctx.socket(zmq.PAIR)
        stop.bind(_STOP)
        self._io_ready.set()
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        beat = protocol.event(protocol.HEARTBEAT)
        last_heard = next_beat = time.monotonic()
        try:
            while True:
                timeout = max(0.0, next_beat - time.monotonic())
                ready = dict(poller.poll(timeout * 1000))
                if stop in ready:
                    return
                if dealer in ready:
                    last_heard = time.monotonic()
                    while True:
                        try:
                            self._on_command(dealer.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                now = time.monotonic()
                if now >= next_beat:
                    dealer.send(beat)
                    next_beat = now + self.heartbeat_interval
                if now - last_heard > self.silence_limit:
                    # No supervisor, no reason to live: a worker never outlives it.
                    log.warning("supervisor silent; exiting", silent_s=round(now - last_heard, 1))
                    os._exit(3)
        finally:
            dealer.close()
            stop.close(linger=0)

    def _on_command(self, frame: bytes) -> None:
        cmd = _command(frame)
        if cmd is not None and cmd["op"] == protocol.CANCEL:
            self.cancelled.add(cmd["rid"])


def _command(frame: bytes) -> dict[str, Any] | None:
    """A command from the supervisor, or None (logged) if it is not one."""
    try:
        return protocol.parse_worker_command(frame)
    except BadRequest as exc:
        log.warning("dropped bad command", error=exc.message)
        return None
