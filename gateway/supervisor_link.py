"""The gateway's one connection to the supervisor: corral's own AsyncClient,
over the same socket as every other client. No private path into the
supervisor's state: what the gateway knows, it asks for.

A generation is opened by waiting for its first event, so that a request
that fails at once (unknown model, busy, not enough memory) is answered
with its HTTP status before any byte of a stream is sent.

A model named by a registry reference that is neither in the catalog nor in
the store is pulled, then the request is made again, as ``corral run`` does:
the pull costs nothing on the way of a request for a model that is there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from corral.client import AsyncClient
from corral.configs.settings import Settings
from corral.gateway.metrics import Metrics
from corral.store.api import ensure_local
from corral.supervisor.errors import CorralError, ModelNotFound
from corral.supervisor.logs import get_logger

log = get_logger()

class Generation:
    """One answer in progress, its first piece already received."""

    def __init__(self, link: "SupervisorLink", response: Any, started: float):
        self.link = link
        self.response = response
        self.started = started
        self.first: str | None = None
        self.ttft_s: float | None = None
        self._it: AsyncIterator[str] = response.__aiter__()
        self._ended = False
        self._taken = 0  # log-probability entries handed out

    async def _open(self) -> None:
        try:
            self.first = await self._it.__anext__()
            self.ttft_s = time.perf_counter() - self.started
        except StopAsyncIteration:
            self._end()

    async def __aiter__(self) -> AsyncIterator[str]:
        if self.first is not None:
            yield self.first
        async for piece in self._it:
            yield piece
        self._end()

    async def text(self) -> str:
        async for _ in self:
            pass
        return self.response.text_so_far()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.link.metrics.generation_ended(
                self.ttft_s, self.usage.get("completion_tokens", 0), self.response.timings.get("tokens_per_s", 0.0)
            )

    @property
    def usage(self) -> dict[str, int]:
        return self.response.usage

    @property
    def stopped(self) -> str | None:
        return self.response.stopped

    def take_logprobs(self) -> list[dict[str, Any]]:
        """The tokens' log probabilities that arrived since the last call."""
        from corral.client.requests import logprob_entry

        entries = self.response.token_logprobs
        new, self._taken = entries[self._taken:], len(entries)
        return [logprob_entry(t) for t in new]

    @property
    def stop_sequence(self) -> str | None:
        return self.response.stop_sequence

    @property
    def timings(self) -> dict[str, float]:
        return self.response.timings

    @property
    def load_ms(self) -> float:
        return self.response.load_ms

    async def cancel(self) -> None:
        """Stop it at the supervisor, then read its last events in the
        background so the client library lets go of it."""
        if self.response.done is not None:
            return
        await self.response.cancel()
        self.link.in_background(self._drain())

    async def _drain(self) -> None:
        try:
            await self.response.text()
        except CorralError:
            pass


class SupervisorLink:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.client = AsyncClient(settings, autostart=False)
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.client.connect()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.client.close()

    def in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _model_call(self, call: Any, model: str, *args: Any, **kwargs: Any) -> Any:
        """``call`` for ``model``, a catalog or store name only (never a
        file); a missing model that a registry has is pulled first."""
        try:
            return await call(model, *args, names_only=True, **kwargs)
        except ModelNotFound as missing:
            try:
                pulled = await ensure_local(model, self.settings)
            except ModelNotFound as exc:
                # Not here, and the registry has no such model: still "not found".
                raise ModelNotFound(f"{missing.message}; pulling it failed: {exc.message}") from None
            except CorralError as exc:
                # The registry or the disk failed (502, 507): say so, not "not found".
                raise type(exc)(f"{missing.message}; pulling it failed: {exc.message}") from None
            if not pulled:
                raise
            return await call(model, *args, names_only=True, **kwargs)

    async def generation(self, op: str, model: str, payload: Any, options: dict[str, Any]) -> Generation:
        """Start a chat (``payload``: messages) or a generate (a prompt) and
        wait for its first event; CorralError if it fails at once."""
        return await self._model_call(self._open, model, op, payload, options)

    async def _open(self, model: str, op: str, payload: Any, options: dict[str, Any], **fields: Any) -> Generation:
        started = time.perf_counter()
        call = self.client.chat if op == "chat" else self.client.generate
        response = await call(model, payload, **options, **fields)
        generation = Generation(self, response, started)
        try:
            await generation._open()
        except BaseException:
            if not isinstance(generation.response.done, dict):
                await generation.cancel()
            raise
        return generation

    async def tokenizer(self, call: str, model: str, *args: Any, **kwargs: Any) -> Any:
        """The model's tokenizer or chat template: ``call`` is the client's
        tokenize, detokenize or render_chat."""
        return await self._model_call(getattr(self.client, call), model, *args, **kwargs)

    async def load(self, model: str, **kwargs: Any) -> dict:
        return await self._model_call(self.client.load, model, **kwargs)

    async def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        return await self.client.unload(model, all=all)

    async def ps(self) -> list[dict]:
        return await self.client.ps()

    async def status(self) -> dict:
        return await self.client.status()

    async def embed(self, model: str, inputs: list[str], **kwargs: Any) -> dict:
        return await self._model_call(self.client.embed, model, inputs, **kwargs)
