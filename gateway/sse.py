"""Streamed answers: Server-Sent Events for the OpenAI routes, NDJSON for
Ollama's, sent by one ASGI response that cancels its generation when the
client disconnects."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import msgspec
from starlette.types import Receive, Scope, Send

from corral.gateway.disconnect import ClientGone, until_disconnect
from corral.supervisor.logs import get_logger

log = get_logger()

SSE_DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.Encoder().encode


def sse(data: Any) -> bytes:
    """One SSE event carrying ``data`` as JSON."""
    return b"data: " + _encode(data) + b"\n\n"


def sse_event(kind: str, data: Any) -> bytes:
    """One SSE event with its ``event:`` name (the Responses and Anthropic APIs)."""
    return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def ndjson(data: Any) -> bytes:
    return _encode(data) + b"\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream:
    """A 200 response whose body is ``chunks``; if the client goes away
    first, ``on_disconnect`` runs (it cancels the generation)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        on_disconnect: Callable[[], Awaitable[None]],
        media_type: str,
        headers: dict[str, str] | None = None,
    ):
        self.chunks = chunks
        self.on_disconnect = on_disconnect
        self.raw_headers = [(b"content-type", media_type.encode())]
        self.raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.status_code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await until_disconnect(receive, stream)
        except (ClientGone, OSError):
            log.debug("client disconnected mid-stream; cancelling", path=scope.get("path"))
            await self.on_disconnect()
