"""The asyncio client, for use inside async programs.

    from corral.client import AsyncClient

    async with AsyncClient() as client:
        response = await client.chat("ai/smollm2", [{"role": "user", "content": "Hi"}])
        async for piece in response:
            print(piece, end="")
        async for result in client.batch("ai/smollm2", ["a", "b", "c"], max_tokens=20):
            print(result.id, result.text)

One reader task owns the socket and hands each reply to the queue of its
request, so any number of responses can stream at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, AsyncIterator, Iterable

import zmq
import zmq.asyncio

from corral.client.connection import monitor_event
from corral.client.launch import ensure_supervisor
from corral.client.requests import (
    BatchItem,
    BatchResult,
    ResponseState,
    batch_items,
    model_fields,
    model_ref,
    should_retry,
    stream_request,
)
from corral.configs.settings import Settings, load_settings
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, SupervisorUnreachable, error_for_code


class AsyncResponse(ResponseState):
    """One streamed answer: ``async for piece in response``, or ``await
    response.text()``."""

    def __init__(self, client: "AsyncClient", rid: int, model: str):
        super().__init__(rid, model)
        self._client = client

    async def __aiter__(self) -> AsyncIterator[str]:
        for piece in list(self.chunks):
            yield piece
        while self.done is None:
            msg = await self._client._next_event(self.id)
            if msg["ev"] != protocol.TOKEN:
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
            await self._client._send(protocol.request(protocol.CANCEL, self.id))


class AsyncClient:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True):
        self.settings = settings or load_settings()
        self.autostart = autostart
        self._queues: dict[int, asyncio.Queue] = {}
        self._next_id = 1
        self._reader: asyncio.Task | None = None
        self._lost: CorralError | None = None

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        if self.autostart:
            # Starting a supervisor blocks for a moment; keep the loop free.
            await asyncio.get_running_loop().run_in_executor(None, ensure_supervisor, self.settings)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(self.settings.endpoint)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._sock.disable_monitor()
            self._monitor.close(0)
            self._sock.close(0)
            self._ctx.term()
            self._reader = None

    async def _read(self) -> None:
        poller = zmq.asyncio.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        connected = False
        while True:
            for sock, _ in await poller.poll():
                if sock is self._monitor:
                    event = monitor_event(await self._monitor.recv_multipart())
                    if event == zmq.EVENT_CONNECTED:
                        connected = True
                    elif event == zmq.EVENT_DISCONNECTED and connected:
                        self._lost = SupervisorUnreachable(
                            f"lost the connection to the corral supervisor ({self.settings.socket_path}); "
                            "see `corral logs`, then try again"
                        )
                        for queue in self._queues.values():
                            queue.put_nowait(None)
                    continue
                try:
                    msg = protocol.parse_reply(await self._sock.recv())
                except BadRequest:
                    continue
                queue = self._queues.get(msg.get("id"))
                if queue is not None:
                    queue.put_nowait(msg)

    async def _send(self, frame: bytes) -> None:
        await self._sock.send(frame)

    async def _request(self, op: str, **fields: Any) -> int:
        rid = self._next_id
        self._next_id += 1
        self._queues[rid] = asyncio.Queue()
        await self._send(protocol.request(op, rid, **fields))
        return rid

    async def _next_event(self, rid: int) -> dict:
        msg = await self._queues[rid].get()
        if msg is None:
            raise self._lost
        return msg

    def _forget(self, rid: int) -> None:
        self._queues.pop(rid, None)

    async def _call(self, op: str, **fields: Any) -> dict:
        rid = await self._request(op, **fields)
        try:
            msg = await self._next_event(rid)
        finally:
            self._forget(rid)
        if msg["ev"] == protocol.ERROR:
            raise error_for_code(msg.get("code", ""), msg.get("message", "unknown error"))
        return msg

    # -- the same calls as Client -----------------------------------------

    async def generate(self, model: str, prompt: str, **kwargs: Any) -> AsyncResponse:
        return await self._stream(protocol.GENERATE, model, {"prompt": prompt}, kwargs)

    async def chat(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> AsyncResponse:
        return await self._stream(protocol.CHAT, model, {"messages": list(messages)}, kwargs)

    async def _stream(self, op: str, model: str, payload: dict, kwargs: dict) -> AsyncResponse:
        fields = stream_request(model, payload, kwargs)
        return AsyncResponse(self, await self._request(op, **fields), fields["model"])

    async def load(self, model: str, **kwargs: Any) -> dict:
        return await self._call(protocol.LOAD, **model_fields(model, **kwargs))

    async def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        fields: dict[str, Any] = {"all": True} if all else {"model": model_ref(model or "")}
        return (await self._call(protocol.UNLOAD, **fields)).get("unloaded", [])

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
        todo = deque(batch_items(prompts))
        done: asyncio.Queue[BatchResult | BatchItem] = asyncio.Queue()

        async def run_one(item: BatchItem) -> None:
            item.attempts += 1
            response = await self._stream(item.op, model, item.payload, {**kwargs, **item.options})
            try:
                text = await response.text()
            except CorralError as exc:
                done.put_nowait(item if should_retry(item, exc) else BatchResult(item.index, item.id, error=exc, attempts=item.attempts))
                return
            done.put_nowait(BatchResult(item.index, item.id, text, response.usage, response.stopped, attempts=item.attempts))

        tasks: set[asyncio.Task] = set()
        running = 0  # started and not yet reported: counted here, not by the task set,
        # whose done-callbacks run a loop turn later
        try:
            while todo or running:
                while todo and running < max(1, concurrency):
                    task = asyncio.create_task(run_one(todo.popleft()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    running += 1
                outcome = await done.get()
                running -= 1
                if isinstance(outcome, BatchItem):
                    todo.appendleft(outcome)  # a crash: once more
                else:
                    yield outcome
        finally:
            for task in tasks:
                task.cancel()
