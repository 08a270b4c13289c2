"""Noticing that the HTTP client went away while we wait or stream.

After the body is read, an ASGI ``receive()`` returns only when the client
disconnects. One watcher task waits on it; when it fires, it cancels the
request's own task, which then cancels its generation at the supervisor:
a client that hangs up never leaves a worker decoding for nobody.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client disconnected before the answer was complete."""


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, or ClientGone as soon as the client disconnects
    (``work`` is cancelled at its current await)."""
    me = asyncio.current_task()
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    gone = finished = False

    def on_disconnect(task: asyncio.Future) -> None:
        nonlocal gone
        # `finished`: the callback may run a loop turn after the work ended.
        if not finished and not task.cancelled() and task.exception() is None:
            gone = True
            me.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        return await work()
    except asyncio.CancelledError:
        if gone and me.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        finished = True
        watcher.cancel()
