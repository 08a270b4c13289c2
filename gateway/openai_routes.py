"""OpenAI's API: chat completions, completions, embeddings and models.

Docker Model Runner serves the same routes under ``/engines/v1`` and
``/engines/llama.cpp/v1``; ``app.py`` mounts this table at all three.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any, AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.gateway import route_support as rs
from corral.gateway import logprobs, sampling, schemas, tools
from corral.gateway.errors import openai_body, status_for
from corral.gateway.route_support import JSONResponse
from corral.gateway.model_listing import ModelInfo, find_model, list_models
from corral.gateway.sse import SSE_DONE, SSE_HEADERS, EventStream, sse
from corral.gateway.supervisor_link import Generation
from corral.supervisor.errors import BadRequest, Cancelled, CorralError


def _usage(generation: Generation) -> dict[str, int]:
    prompt = generation.usage.get("prompt_tokens", 0)
    completion = generation.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls(calls: list[tools.Call]) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _tool_call_deltas(calls: list[tools.Call]) -> Iterator[dict]:
    """Each call as the OpenAI SDK accumulates it: id and name first, then
    the arguments."""
    for i, c in enumerate(calls):
        yield {"tool_calls": [{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}]}
        yield {"tool_calls": [{"index": i, "function": {"arguments": c.arguments}}]}


class _Shape:
    """How chat and plain completions differ on the wire."""

    def __init__(self, chat: bool, model: str, plan: tools.Plan = tools.NO_TOOLS, logprobs: bool = False, index: int = 0):
        self.chat = chat
        self.index = index  # the choice this shape writes (n > 1: one shape per choice)
        # a tool call's JSON is not the model's text: no log probabilities for it
        self.logprobs = logprobs and not plan.active
        self.text_offset = 0
        self.model = model
        self.plan = plan
        self.id = ("chatcmpl-" if chat else "cmpl-") + os.urandom(12).hex()
        self.created = rs.unix_now()
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.first = chat  # the next chunk announces the assistant's turn

    def _frame(self, object: str, choices: list, **extra: Any) -> dict:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model, "system_fingerprint": None, "choices": choices, **extra}

    def _logprobs(self, generation: Generation) -> dict | None:
        if not self.logprobs:
            return None
        entries = generation.take_logprobs()
        if self.chat:
            return logprobs.chat(entries)
        shaped = logprobs.legacy(entries, self.text_offset)
        self.text_offset += sum(len(t) for t in shaped["tokens"])
        return shaped

    def whole(self, generation: Generation, text: str) -> dict:
        if not self.chat:
            choice = {"index": self.index, "text": text, "logprobs": self._logprobs(generation), "finish_reason": generation.stopped}
        else:
            content, calls = tools.parse(text, self.plan)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = _tool_calls(calls)
            choice = {"index": self.index, "message": message, "logprobs": self._logprobs(generation),
                      "finish_reason": "tool_calls" if calls else generation.stopped}
        return self._frame(self.object, [choice], usage=_usage(generation))

    def chunk(self, delta: dict, *, usage: bool = False, finish: str | None = None, generation: Generation | None = None) -> dict:
        """One streamed chunk: ``delta`` is the chat delta; a plain
        completion carries its ``content`` as ``text``."""
        if self.chat:
            if self.first:
                delta = {"role": "assistant", **delta}
                self.first = False
            choice = {"index": self.index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": self.index, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        if generation is not None:
            choice["logprobs"] = self._logprobs(generation)
        return self._frame(self.chunk_object, [choice], **({"usage": None} if usage else {}))

    def usage_chunk(self, generations: list[Generation]) -> dict:
        return self._frame(self.chunk_object, [], usage=_usage_of(generations))

    def sibling(self, index: int) -> "_Shape":
        """The shape of choice ``index`` of the same answer (n > 1)."""
        other = _Shape(self.chat, self.model, self.plan, self.logprobs, index)
        other.id, other.created = self.id, self.created
        return other


def _usage_of(generations: list[Generation]) -> dict[str, int]:
    """n choices: the prompt counted once, every choice's tokens."""
    usage = _usage(generations[0])
    usage["completion_tokens"] = sum(g.usage.get("completion_tokens", 0) for g in generations)
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


async def _choice_chunks(shape: _Shape, generation: Generation, include_usage: bool) -> AsyncIterator[dict]:
    """One choice's chunks, as it decodes."""
    reply = tools.ReplyStream(shape.plan)
    async for piece in generation:
        text = reply.feed(piece)
        if text:
            yield shape.chunk({"content": text}, usage=include_usage, generation=generation)
    if generation.stopped == "cancelled":
        raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping")
    rest, calls = reply.finish()
    if rest or shape.first:  # an empty answer still announces the assistant's turn
        yield shape.chunk({"content": rest or ""}, usage=include_usage)
    for delta in _tool_call_deltas(calls):
        yield shape.chunk(delta, usage=include_usage)
    yield shape.chunk({}, usage=include_usage, finish="tool_calls" if calls else generation.stopped)


async def _merged(streams: list[AsyncIterator[dict]]) -> AsyncIterator[dict]:
    """The chunks of several choices in the order they arrive."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield chunk
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator[dict]) -> None:
        try:
            async for chunk in stream:
                await queue.put(chunk)
        except BaseException as exc:  # handed to the reader, which raises it
            await queue.put(exc)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


async def _sse_chunks(shapes: list[_Shape], generations: list[Generation], include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in _merged([_choice_chunks(s, g, include_usage) for s, g in zip(shapes, generations)]):
            yield sse(chunk)
        if include_usage:
            yield sse(shapes[0].usage_chunk(generations))
    except CorralError as exc:
        # The status line is gone already: the error travels as an event.
        yield sse(openai_body(exc, status_for(exc)))
    yield SSE_DONE


async def _answer(request: Request, req: schemas.Sampling, op: str, model: str, payload: Any, options: dict,
                  plan: tools.Plan = tools.NO_TOOLS) -> Response:
    if rs.preload_only(request):
        await rs.link(request).load(model)
        return JSONResponse({"model": model, "preloaded": True})
    first = _Shape(op == "chat", model, plan, logprobs=options.get("logprobs") is not None)
    each = sampling.each_choice(options, req.n)
    shapes = [first] + [first.sibling(i) for i in range(1, len(each))]
    if not req.stream:
        answers = await rs.complete_all(request, op, model, payload, each)
        bodies = [shape.whole(g, text) for shape, (g, text) in zip(shapes, answers)]
        body = {**bodies[0], "choices": [b["choices"][0] for b in bodies], "usage": _usage_of([g for g, _ in answers])}
        return JSONResponse(body)
    generations = await rs.open_generations(request, op, model, payload, each)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def cancel_all() -> None:
        for g in generations:
            await g.cancel()

    return EventStream(_sse_chunks(shapes, generations, include_usage), cancel_all, "text/event-stream", SSE_HEADERS)


async def chat_completions(request: Request) -> Response:
    req = await rs.body(request, schemas.ChatCompletionRequest)
    model = await rs.model_for(request, req.model)
    plan = rs.for_model(request, model, sampling.openai_tools(req))
    options = sampling.openai_options(req, max_tokens=req.max_completion_tokens or req.max_tokens, response_format=req.response_format)
    if plan.active and "grammar" in options:
        raise BadRequest("grammar: cannot be combined with tools; send one of them")
    options.update(tools.sampling_options(plan))
    messages = tools.with_instructions(sampling.openai_messages(req.messages), plan)
    return await _answer(request, req, "chat", model, messages, options, plan)


async def completions(request: Request) -> Response:
    req = await rs.body(request, schemas.CompletionRequest)
    model = await rs.model_for(request, req.model)
    if req.echo:
        raise BadRequest("echo: corral does not echo the prompt; leave echo unset")
    if req.suffix:
        raise BadRequest("suffix: corral does not fill in the middle; leave suffix unset")
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    return await _answer(request, req, "generate", model, prompt, sampling.openai_options(req))


def _vector(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


async def embeddings(request: Request) -> Response:
    req = await rs.body(request, schemas.EmbeddingRequest)
    model = await rs.model_for(request, req.model)
    inputs = [req.input] if isinstance(req.input, str) else req.input
    result = await rs.link(request).embed(model, inputs)
    data = [{"object": "embedding", "index": i, "embedding": _vector(v, req.encoding_format)} for i, v in enumerate(result["embeddings"])]
    tokens = result.get("usage", {}).get("prompt_tokens", 0)
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def model_object(info: ModelInfo) -> dict:
    return {"id": info.name, "object": "model", "created": info.created, "owned_by": "corral"}


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [model_object(m) for m in list_models(rs.settings(request))]})


async def model(request: Request) -> Response:
    return JSONResponse(model_object(find_model(rs.settings(request), request.path_params["name"])))


def routes(prefix: str = "/v1") -> list[Route]:
    return [
        Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
        Route(f"{prefix}/completions", completions, methods=["POST"]),
        Route(f"{prefix}/embeddings", embeddings, methods=["POST"]),
        Route(f"{prefix}/models", models, methods=["GET"]),
        Route(f"{prefix}/models/{{name:path}}", model, methods=["GET"]),
    ]
