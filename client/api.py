"""The Python client library.

    from corral.client import Client

    with Client() as client:
        for piece in client.generate("ai/smollm2", "Hi", temperature=0):
            print(piece, end="", flush=True)
        answer = client.chat("ai/smollm2", [{"role": "user", "content": "2+2?"}])
        print(answer.text(), answer.usage)

A response is lazy: iterate it to stream, or call ``.text()`` to drain it;
its stats are there once it has ended.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Iterator

from corral.client.connection import Connection
from corral.client.launch import ensure_supervisor, supervisor_pid
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
from corral.supervisor.errors import CorralError, SupervisorUnreachable, error_for_code


class Response(ResponseState):
    """One streamed answer. Iterate for text pieces; ``text()`` drains."""

    def __init__(self, conn: Connection, rid: int, model: str):
        super().__init__(rid, model)
        self._conn = conn

    def __iter__(self) -> Iterator[str]:
        yield from list(self.chunks)
        while self.done is None:
            msg = self._conn.next_event(self.id)
            if msg["ev"] != protocol.TOKEN:
                self._conn.forget(self.id)
            piece = self.feed(msg)
            if piece is not None:
                yield piece

    def text(self) -> str:
        for _ in self:
            pass
        return self.text_so_far()

    def cancel(self) -> None:
        """Stop the generation; the stream then ends with ``stopped == "cancelled"``."""
        if self.done is None:
            self._conn.send_cancel(self.id)


class Client:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True, preload: dict | None = None):
        """``preload``: model fields (as for :meth:`load`) of a model that a
        supervisor started now should begin loading at once."""
        self.settings = settings or load_settings()
        if autostart:
            ensure_supervisor(self.settings, preload=model_fields(**preload) if preload else None)
        elif supervisor_pid(self.settings) is None:
            raise SupervisorUnreachable(
                f"no corral supervisor is running for {self.settings.home}; start one with `corral serve`"
            )
        self.conn = Connection(self.settings)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- model requests --------------------------------------------------

    def generate(self, model: str, prompt: str, **kwargs: Any) -> Response:
        """Stream an answer to a raw prompt. Keyword arguments: sampling
        options (temperature, top_p, top_k, seed, max_tokens, stop,
        repeat_penalty) and keep_alive, ignore_memory_check, model_type."""
        return self._stream(protocol.GENERATE, model, {"prompt": prompt}, kwargs)

    def chat(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Response:
        """Stream the next turn of a conversation, with the model's own chat
        template. Keyword arguments as for :meth:`generate`."""
        return self._stream(protocol.CHAT, model, {"messages": list(messages)}, kwargs)

    def load(self, model: str, **kwargs: Any) -> dict:
        """Load a model and return once it is ready (``keep_alive``,
        ``ignore_memory_check``, ``model_type`` as for generate)."""
        return self._call(protocol.LOAD, **model_fields(model, **kwargs))

    def _stream(self, op: str, model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> Response:
        fields = stream_request(model, payload, kwargs)
        return Response(self.conn, self.conn.send(op, **fields), fields["model"])

    def batch(
        self,
        model: str,
        prompts: Iterable[str | dict[str, Any]],
        *,
        concurrency: int = 4,
        **kwargs: Any,
    ) -> Iterator[BatchResult]:
        """Run many prompts; yield each result as it finishes (not in order).

        A prompt is a string or a map with ``prompt`` or ``messages``, an
        optional ``id`` and per-prompt sampling options. Up to
        ``concurrency`` requests wait at the supervisor at once, so the
        worker never idles between prompts. A prompt whose worker crashed is
        tried once more; then its result carries the error and the batch
        goes on.
        """
        todo = deque(batch_items(prompts))
        running: dict[int, tuple[BatchItem, Response]] = {}
        try:
            while todo or running:
                while todo and len(running) < max(1, concurrency):
                    item = todo.popleft()
                    item.attempts += 1
                    response = self._stream(item.op, model, item.payload, {**kwargs, **item.options})
                    running[response.id] = (item, response)
                rid, msg = self.conn.next_any(running)
                item, response = running[rid]
                try:
                    if response.feed(msg) is not None:
                        continue
                except CorralError as exc:
                    del running[rid]
                    self.conn.forget(rid)
                    if should_retry(item, exc):
                        todo.appendleft(item)
                    else:
                        yield BatchResult(item.index, item.id, error=exc, attempts=item.attempts)
                    continue
                del running[rid]
                self.conn.forget(rid)
                yield BatchResult(item.index, item.id, response.text_so_far(), response.usage, response.stopped, attempts=item.attempts)
        finally:
            for rid, (_, response) in running.items():  # the caller stopped early
                response.cancel()
                self.conn.forget(rid)

    # -- management ------------------------------------------------------

    def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        fields: dict[str, Any] = {"all": True} if all else {"model": model_ref(model or "")}
        return self._call(protocol.UNLOAD, **fields).get("unloaded", [])

    def ps(self) -> list[dict]:
        return self._call(protocol.PS)["result"]

    def status(self) -> dict:
        return self._call(protocol.STATUS)["result"]

    def shutdown(self) -> None:
        """Stop every worker, then the supervisor; returns when it is done."""
        self._call(protocol.SHUTDOWN)

    def _call(self, op: str, **fields: Any) -> dict:
        rid = self.conn.send(op, **fields)
        try:
            msg = self.conn.next_event(rid)
        finally:
            self.conn.forget(rid)
        if msg["ev"] == protocol.ERROR:
            raise error_for_code(msg.get("code", ""), msg.get("message", "unknown error"))
        return msg
