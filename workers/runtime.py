"""The process wrapper around a backend: sockets, heartbeats, cancel, stats.

Two threads, each with its own DEALER socket to the supervisor (a ZeroMQ
socket must stay in one thread). The I/O thread's control socket gets
heartbeats and cancels, beats every interval and notices a silent
supervisor; it never waits on the model, so a long prompt evaluation
(llama.cpp releases the GIL) never looks like a hang. The main thread's
data socket (identity + ``/data``) receives the work itself (generate,
chat, embed, shutdown, in order) and streams the replies straight back: no
hop between threads per request or per token, which on a 2-core machine
would take CPU from the decoding threads.

The main thread drives the backend a step at a time: between two steps it
takes new work without waiting, so a request joins the sequences already
decoding at the next token; a finished or cancelled one leaves at once.
"""

from __future__ import annotations

import array
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, GenerationFailed, ModelLoadFailed
from corral.supervisor.logs import get_logger
from corral.workers.backend import Backend, Sampling, Usage
from corral.workers.chat_context import fit_conversation, template_message

log = get_logger()

# The main thread's word to the I/O thread that the worker is done.
_STOP = "inproc://stop"
_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


@dataclass
class Running:
    """One sequence's place in the worker: who asked, and its clock."""

    job: protocol.Work  # a Generate or Chat request
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)
    first: float | None = None
    dropped: int | None = None  # turns a truncated chat left out


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
        self.pending: deque = deque()  # work that arrived while every sequence was taken
        self.running: dict[int, Running] = {}
        self.context_length = 0
        self.broken = False  # the engine failed: no state of it can be trusted

    # -- main thread ---------------------------------------------------------

    def serve(self) -> int:
        io = threading.Thread(target=self._io_loop, name="corral-io", daemon=True)
        io.start()
        self._io_ready.wait()
        self._data = self.ctx.socket(zmq.DEALER)
        self._data.setsockopt(zmq.IDENTITY, self.identity + protocol.WORKER_DATA_SUFFIX)
        self._data.setsockopt(zmq.SNDHWM, 0)  # a stream is bounded; never drop a token
        self._data.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
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
            self._send(protocol.error(None, err))
            return 1
        load_ms = (time.monotonic() - started) * 1000
        log.info("model loaded", load_ms=round(load_ms, 1), **info)
        self.context_length = info["context_length"]
        self._send(protocol.event(
            protocol.READY, pid=os.getpid(), load_ms=load_ms, parallel=self.backend.parallel,
            embeddings=self.backend.embeddings, grammar=self.backend.grammar,
            **{k: info[k] for k in ("context_length", "threads", "architecture", "chat_template") if k in info},
        ))
        self._serve()
        if self.broken:
            return 1
        self.backend.close()
        log.info("worker stopping")
        return 0

    def _serve(self) -> None:
        shutting_down = False
        while not (shutting_down and not self.running and not self.pending) and not self.broken:
            # Wait for work only when there is nothing to decode.
            if not shutting_down:
                if not (self.running or self.pending):
                    self._data.poll()
                # Between two steps: take what has arrived, without the
                # exception a failed non-blocking recv costs.
                while self._data.getsockopt(_EVENTS) & _POLLIN:
                    job = _command(self._data.recv(_NOBLOCK))
                    if isinstance(job, protocol.WorkShutdown):
                        shutting_down = True  # after the work already sent
                        break
                    if isinstance(job, protocol.WorkThreads):
                        self.backend.set_threads(job.threads)
                    elif job is not None:
                        self.pending.append(job)
            self._apply_cancels()
            self._start_pending()
            if self.running:
                self._step()

    def _send(self, frame: bytes) -> None:
        self._data.send(frame)

    def _done(self, rid: int, cid, **fields) -> None:
        self._send(protocol.event(protocol.DONE, rid=rid, id=cid, **fields))

    def _apply_cancels(self) -> None:
        if not self.cancelled:
            return
        for rid in list(self.cancelled):
            if rid in self.running:
                self.backend.cancel(rid)
                self._finish(rid, self.running[rid].usage, cancelled=True)
                self.cancelled.discard(rid)
        for job in [j for j in self.pending if j.rid in self.cancelled]:
            self.pending.remove(job)
            self.cancelled.discard(job.rid)
            self._done(job.rid, job.request.id, stopped="cancelled", usage=protocol.Usage(), timings=protocol.Timings())

    def _start_pending(self) -> None:
        while self.pending and self.backend.active() < self.backend.parallel:
            job = self.pending.popleft()
            request = job.request
            if isinstance(request, protocol.Embed):
                self._embed(job.rid, request)
                continue
            if isinstance(request, protocol.Tokenize):
                self._tokenize(job.rid, request)
                continue
            run = Running(job)
            try:
                sampling = Sampling.from_options(request.options, self.backend.spec.get("stop") or ())
                if isinstance(request, protocol.Chat):
                    messages = [template_message(m) for m in request.messages]
                    tools = json.loads(request.tools) if request.tools else None
                    if request.truncate:
                        messages, run.dropped = fit_conversation(self.backend, messages, self.context_length,
                                                                 sampling.max_tokens, tools)
                    prompt, template_stop = self.backend.chat_prompt(messages, tools)
                    prompt += request.assistant_prefix or ""
                    sampling.stop = list(dict.fromkeys([*sampling.stop, *template_stop]))
                else:
                    prompt = request.prompt
                self.backend.start(job.rid, prompt, sampling, run.usage, tokens=getattr(request, "tokens", None))
            except Exception as exc:
                self._send(protocol.error(request.id, _as_error(exc), rid=job.rid))
                continue
            self.running[job.rid] = run

    def _step(self) -> None:
        try:
            events = self.backend.step()
        except Exception as exc:  # the engine failed as a whole: every sequence ends
            log.error("decode step failed; the worker exits so that a fresh one takes over", exc_info=True)
            for rid, run in list(self.running.items()):
                del self.running[rid]
                self._send(protocol.error(run.job.request.id, GenerationFailed(f"generation failed: {exc}"), rid=rid))
            self.broken = True
            return
        for rid, text, finished in events:
            run = self.running.get(rid)
            if run is None:
                continue
            if text:
                if run.first is None:
                    run.first = time.monotonic()
                pending = run.usage.logprobs
                if pending:
                    run.usage.logprobs = []
                    entries = [protocol.TokenLogprob(*entry) for entry in pending]
                    self._send(protocol.encode(protocol.Token(rid=rid, id=run.job.request.id, text=text, logprobs=entries)))
                else:
                    self._send(protocol.encode(protocol.Token(rid=rid, id=run.job.request.id, text=text)))
            if finished:
                self._finish(rid, run.usage)

    def _finish(self, rid: int, usage: Usage, cancelled: bool = False) -> None:
        run = self.running.pop(rid)
        if usage.error is not None and not cancelled:
            log.info("sequence failed", rid=rid, error=str(usage.error))
            self._send(protocol.error(run.job.request.id, _as_error(usage.error), rid=rid))
            return
        ended = time.monotonic()
        first = run.first or ended
        decode_s = ended - first
        # tokens/s over the decode phase: the first token ends prompt evaluation
        n = usage.completion_tokens
        tps = (n - 1) / decode_s if decode_s > 0 and n > 1 else 0.0
        self._done(
            rid, run.job.request.id,
            stopped="cancelled" if cancelled else usage.finish_reason,
            usage=protocol.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=n),
            timings=protocol.Timings(ttft_ms=(first - run.started) * 1000, total_ms=(ended - run.started) * 1000,
                                     tokens_per_s=tps),
            dropped_messages=run.dropped,
            stop_sequence=usage.stop_sequence,
        )

    def _embed(self, rid: int, request: protocol.Embed) -> None:
        started = time.monotonic()
        try:
            vectors, tokens = self.backend.embed(list(request.input))
        except Exception as exc:
            self._send(protocol.error(request.id, _as_error(exc), rid=rid))
            return
        for i, vector in enumerate(vectors):
            packed = array.array("f", vector).tobytes()  # native float32: little-endian on every machine we run
            self._send(protocol.event(protocol.EMBEDDING, rid=rid, id=request.id, index=i, vector=packed))
        elapsed = (time.monotonic() - started) * 1000
        self._done(rid, request.id, stopped="stop", usage=protocol.Usage(prompt_tokens=tokens),
                   timings=protocol.Timings(ttft_ms=elapsed, total_ms=elapsed))

    def _tokenize(self, rid: int, request: protocol.Tokenize) -> None:
        """Answered at once, between decode steps: a tokenizer call or a
        template render takes well under a step's time."""
        try:
            if request.text is not None:
                tokens = self.backend.tokenize(request.text, special=request.special)
                pieces = [self.backend.token_bytes(t) for t in tokens] if request.pieces else None
                answer: dict = {"tokens": tokens, "pieces": pieces}
            elif request.tokens is not None:
                answer = {"text": self.backend.detokenize(list(request.tokens))}
            elif request.messages is not None:
                answer = {"text": self.backend.chat_prompt([template_message(m) for m in request.messages])[0]}
            else:
                raise ValueError("send text to tokenize, tokens to detokenize or messages to render")
        except Exception as exc:
            self._send(protocol.error(request.id, _as_error(exc), rid=rid))
            return
        self._done(rid, request.id, stopped="stop", **{k: v for k, v in answer.items() if v is not None})

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
        if isinstance(cmd, protocol.WorkCancel):
            self.cancelled.add(cmd.rid)


def _as_error(exc: BaseException) -> CorralError:
    if isinstance(exc, CorralError):
        return exc
    if isinstance(exc, ValueError):  # the engine's word for a request it cannot take
        return BadRequest(str(exc))
    return GenerationFailed(f"generation failed: {exc}")


def _command(frame: bytes):
    """A command from the supervisor, or None (logged) if it is not one."""
    try:
        return protocol.parse_worker_command(frame)
    except CorralError as exc:
        log.warning("dropped bad command", error=exc.message)
        return None
