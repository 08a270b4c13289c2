"""The store for the HTTP gateway (an asyncio process): pull with streamed
progress (``POST /api/pull``, ``POST /models/create``), the model list
(``GET /models``, ``/api/tags``) and one model (``/api/show``,
``/v1/models/{id}``). The blocking work runs in a thread; the event loop
only awaits it."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from corral.configs.settings import Settings
from corral.store.autopull import needs_pull
from corral.store.listing import model_rows
from corral.store.models import get_model
from corral.store.progress import EventProgress
from corral.store.pull import PullResult, pull


async def pull_events(reference: str, settings: Settings, *, ignore_memory_check: bool = False
                      ) -> AsyncIterator[dict[str, Any]]:
    """Ollama-style progress events (``{"status", "digest", "total",
    "completed"}``), ending with ``{"status": "success", ...}``. A failure
    raises the pull's :class:`CorralError` (``code``, ``exit_code``) after the
    events so far: map it to the route's error shape."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    job = loop.run_in_executor(None, lambda: pull(reference, settings, progress=EventProgress(emit),
                                                  ignore_memory_check=ignore_memory_check))
    while not job.done() or not queue.empty():
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()
    result: PullResult = job.result()  # raises what the pull raised
    yield {"status": "success", "model": result.display, "digest": result.id, "total": result.size,
           "completed": result.size}


async def pull_model(reference: str, settings: Settings, *, ignore_memory_check: bool = False) -> PullResult:
    """Pull without progress events."""
    return await asyncio.to_thread(pull, reference, settings, ignore_memory_check=ignore_memory_check)


async def ensure_local(model: str, settings: Settings) -> bool:
    """Pull ``model`` when it is neither in the catalog nor in the store (a
    route that names a model); ``True`` if it was pulled."""
    if not await asyncio.to_thread(needs_pull, model, settings):
        return False
    await pull_model(model, settings)
    return True


async def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every runnable model, catalog and store, as ``corral list --json`` rows."""
    return await asyncio.to_thread(model_rows, settings)


async def show_model(settings: Settings, name: str) -> dict[str, Any]:
    """One stored model: id, tags, path, size, config facts, layers and the
    GGUF metadata; raises ModelNotFound."""
    model = await asyncio.to_thread(get_model, settings, name)
    return {**model.as_dict(), "gguf": dict(model.config.gguf)}
