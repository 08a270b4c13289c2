"""The asyncio client, for use inside async programs.

    from corral.client import AsyncClient

    async with AsyncClient() as client:
        response = await client.chat("ai/smollm2", [{"role": "user", "content": "Hi"}])
        async for piece in response:
            print(piece, end="")
        async for result in client.batch("ai/smollm2", ["a", "b", "c"], max_tokens=20):
            print(result.id, result.text)

The socket is a plain ZeroMQ socket whose file descriptor the event loop
watches: when it signals, one callback reads every reply waiting, files it
under its request in the shared :class:`~corral.client.core.ClientCore` and
wakes whoever waits for it; so any number of responses stream at once,
without a future per message (zmq.asyncio's reader cost the HTTP gateway
about 120 us of CPU per request). The requests, responses
and batch bookkeeping are the sync client's own (:mod:`corral.client.requests`).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterable

import zmq

from corral.client.core import MONITOR_EVENTS, ClientCore, configure_socket, monitor_event
from corral.client.launch import ensure_supervisor
from corral.client.requests import (BatchResult, BatchRun, ResponseState, call_result, chat_payload, generate_payload, model_fields, model_ref,
                                    stream_request, tokenizer_answer)
from corral.configs.settings import Settings, load_settings
from corral.supervisor import protocol
from corral.supervisor.errors import CorralError


class AsyncResponse(ResponseState):
    """One streamed answer: ``async for piece in response``, or ``await
    response.text()``."""

    def __init__(self, client: "AsyncClient", rid: int, model: str, on_log: Callable[[str], None] | None = None):
        super().__init__(rid, model, on_log)
        self._client = client

    async def __aiter__(self) -> AsyncIterator[str]:
        for piece in list(self.chunks):
            yield piece
        while self.done is None:
            msg = await self._client._next_event(self.id)
            if not isinstance(msg, (protocol.Token, protocol.Log, protocol.Embedding)):
                self._client._forget(self.id)
            piece = self.feed(msg)
            if piece is not None:
                yield piece

    async def text(self) -> str:
        async for _ in self:
            pass
        return self.text_so_far()

    async def cancel(self) -> None:
        if self.done is None:
            self._client._send_frame(self._client._core.cancel_frame(self.id))


_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


class AsyncClient:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True):
        self.settings = settings or load_settings()
        self.autostart = autostart
        self._core = ClientCore(self.settings)
        self._wakeups: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        if self.autostart:
            # Starting a supervisor blocks for a moment; keep the loop free.
            await asyncio.get_running_loop().run_in_executor(None, ensure_supervisor, self.settings)
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        configure_socket(self._sock)
        self._monitor = self._sock.get_monitor_socket(MONITOR_EVENTS)
        self._sock.connect(self.settings.endpoint)
        for sock in (self._sock, self._monitor):
            self._loop.add_reader(sock.getsockopt(zmq.FD), self._on_readable)

    async def close(self) -> None:
        if self._loop is not None:
            for sock in (self._sock, self._monitor):
                self._loop.remove_reader(sock.getsockopt(zmq.FD))
            self._sock.disable_monitor()
            self._monitor.close(0)
            self._sock.close(0)
            self._ctx.term()
            self._loop = None

    def _on_readable(self) -> None:
        """Read all that is waiting. ZeroMQ's descriptor signals an edge, so
        each socket is read until it says it holds nothing more."""
        while self._sock.getsockopt(_EVENTS) & _POLLIN:
            wakeup = self._wakeups.get(self._core.receive(self._sock.recv(_NOBLOCK)))
            if wakeup is not None:
                wakeup.set()
        # After the replies: what a supervisor sent before it exited is still delivered.
        while self._monitor.getsockopt(_EVENTS) & _POLLIN:
            self._core.on_monitor(monitor_event(self._monitor.recv_multipart(_NOBLOCK)))
            for wakeup in self._wakeups.values():  # each waiter finds out whether it was lost
                wakeup.set()

    def _send_frame(self, frame: bytes) -> None:
        self._sock.send(frame, _NOBLOCK)
        # A send lets ZeroMQ process what arrived, which can take the
        # descriptor's edge without the loop seeing it: look again soon.
        self._loop.call_soon(self._on_readable)

    async def _send(self, op: str, wakeup: asyncio.Event | None = None, **fields: Any) -> int:
        rid, frame = self._core.request(op, **fields)
        self._wakeups[rid] = wakeup or asyncio.Event()
        self._send_frame(frame)
        return rid

    async def _next_event(self, rid: int) -> Any:
        while (msg := self._core.pop(rid)) is None:
            wakeup = self._wakeups[rid]
            await wakeup.wait()
            wakeup.clear()
        return msg

    def _forget(self, rid: int) -> None:
        self._core.forget(rid)
        self._wakeups.pop(rid, None)

    async def _call(self, op: str, **fields: Any) -> dict:
        rid = await self._send(op, **fields)
        try:
            while isinstance(msg := await self._next_event(rid), protocol.Log):
                pass
        finally:
            self._forget(rid)
        return call_result(msg)

    # -- the same calls as Client -----------------------------------------

    async def generate(self, model: str, prompt: str, *, tokens: list[int] | None = None, **kwargs: Any) -> AsyncResponse:
        return await self._stream(protocol.GENERATE, model, generate_payload(prompt, tokens), kwargs)

    async def chat(self, model: str, messages: list[dict[str, str]], *, truncate: bool = False,
                   tools: list[dict[str, Any]] | None = None, assistant_prefix: str | None = None, **kwargs: Any) -> AsyncResponse:
        return await self._stream(protocol.CHAT, model, chat_payload(messages, truncate, tools, assistant_prefix), kwargs)

    async def _stream(self, op: str, model: str, payload: dict, kwargs: dict, wakeup: asyncio.Event | None = None) -> AsyncResponse:
        on_log = kwargs.pop("on_log", None)
        fields = stream_request(model, payload, kwargs)
        return AsyncResponse(self, await self._send(op, wakeup, **fields), fields["model"], on_log)

    async def tokenize(self, model: str, text: str, *, special: bool = False, pieces: bool = False, **kwargs: Any) -> dict[str, Any]:
        return await self._tokenizer(model, {"text": text, "special": special, "pieces": pieces}, kwargs)

    async def detokenize(self, model: str, tokens: list[int], **kwargs: Any) -> str:
        return (await self._tokenizer(model, {"tokens": list(tokens)}, kwargs))["text"]

    async def render_chat(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return (await self._tokenizer(model, {"messages": list(messages)}, kwargs))["text"]

    async def _tokenizer(self, model: str, fields: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        response = AsyncResponse(self, await self._send(protocol.TOKENIZE, **fields, **model_fields(model, **kwargs)), model)
        await response.text()
        return tokenizer_answer(response.done)

    async def embed(self, model: str, inputs: list[str], **kwargs: Any) -> dict[str, Any]:
        rid = await self._send(protocol.EMBED, input=list(inputs), **model_fields(model, **kwargs))
        response = AsyncResponse(self, rid, model)
        await response.text()
        return response.embeddings()

    async def load(self, model: str, **kwargs: Any) -> dict:
        return await self._call(protocol.LOAD, **model_fields(model, **kwargs))

    async def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        fields: dict[str, Any] = {"all": True} if all else {"model": model_ref(model or "")}
        return (await self._call(protocol.UNLOAD, **fields)).get("unloaded") or []

    async def ps(self) -> list[dict]:
        return (await self._call(protocol.PS))["result"]

    async def status(self) -> dict:
        return (await self._call(protocol.STATUS))["result"]

    async def batch(
        self,
        model: str,
        prompts: Iterable[str | dict[str, Any]],
        *,
        concurrency: int = 4,
        **kwargs: Any,
    ) -> AsyncIterator[BatchResult]:
        """As :meth:`Client.batch`: results as they finish, crashed prompts
        retried once."""
        run = BatchRun(prompts, concurrency)
        wakeup = asyncio.Event()  # one for the whole batch: any of its replies
        try:
            while not run.finished:
                for item in run.to_start():
                    try:
                        response = await self._stream(item.op, model, item.payload, {**kwargs, **item.options}, wakeup)
                    except CorralError as exc:
                        yield run.failed_to_start(item, exc)
                        continue
                    run.started(item, response)
                got = self._core.pop_any(run.running)
                if got is None:
                    if run.running:
                        await wakeup.wait()
                        wakeup.clear()
                    continue
                rid, msg = got
                result = run.on_event(rid, msg)
                if rid not in run.running:
                    self._forget(rid)
                if result is not None:
                    yield result
        finally:
            for rid in list(run.running):  # the caller stopped early
                self._send_frame(self._core.cancel_frame(rid))
                self._forget(rid)
