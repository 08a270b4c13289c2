"""Ollama's API under ``/api``: chat and generate (NDJSON streams by
default), tags, ps, show, embed and version, with Ollama's field names,
durations in nanoseconds and ``{"error": "..."}`` bodies."""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.configs.settings import parse_duration
from corral.store import api as store_api
from corral.gateway import route_support as rs
from corral.gateway import sampling, schemas, tools
from corral.gateway.errors import ollama_body, status_for
from corral.gateway.model_listing import ModelInfo, find_model, header_facts, list_models
from corral.gateway.route_support import JSONResponse
from corral.gateway.sse import EventStream, ndjson
from corral.gateway.supervisor_link import Generation
from corral.supervisor.errors import BadRequest, Cancelled, CorralError
from corral.supervisor.logs import get_logger

log = get_logger()

# Ollama's "never expires" in /api/ps.
_FOREVER = "2318-11-24T00:00:00Z"
_MS_NS = 1_000_000


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _stats(generation: Generation, started: float) -> dict[str, Any]:
    """The closing object's counts and durations (nanoseconds)."""
    timings = generation.timings
    ttft_ms, total_ms = timings.get("ttft_ms", 0.0), timings.get("total_ms", 0.0)
    return {
        "done_reason": generation.stopped or "stop",
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int(generation.load_ms * _MS_NS),
        "prompt_eval_count": generation.usage.get("prompt_tokens", 0),
        "prompt_eval_duration": int(ttft_ms * _MS_NS),
        "eval_count": generation.usage.get("completion_tokens", 0),
        "eval_duration": int(max(0.0, total_ms - ttft_ms) * _MS_NS),
    }


class _Request:
    """What /api/chat and /api/generate share once their bodies are read."""

    def __init__(self, req: schemas.OllamaRequest, chat: bool):
        self.model = sampling.model_name(req.model)
        self.chat = chat
        self.stream = req.stream
        self.options = sampling.ollama_options(req.options, req.format)
        self.keep_alive = req.keep_alive
        self.load_options: dict[str, Any] = {}
        if req.keep_alive is not None:
            self.load_options["keep_alive"] = req.keep_alive
        if req.options is not None and req.options.num_ctx is not None:
            self.load_options["context_length"] = req.options.num_ctx
        self.started = time.perf_counter()

    plan = tools.NO_TOOLS

    def frame(self, text: str | None, done: bool, calls: list[tools.Call] = (), **extra: Any) -> dict:
        out: dict[str, Any] = {"model": self.model, "created_at": _now_iso()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": text or ""}
            if calls:  # Ollama's arguments are an object, not JSON text
                out["message"]["tool_calls"] = [{"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments_object()}} for i, c in enumerate(calls)]
        else:
            out["response"] = text
        out["done"] = done
        out.update(extra)
        return out


async def _load_or_unload(request: Request, r: _Request) -> Response:
    """An empty prompt loads the model; with keep_alive 0 it unloads it."""
    link = rs.link(request)
    if r.keep_alive is not None and parse_duration(r.keep_alive, "keep_alive") == 0:
        await link.unload(r.model)
        return JSONResponse(r.frame("", True, done_reason="unload"))
    await link.load(r.model, **r.load_options)
    return JSONResponse(r.frame("", True, done_reason="load"))


async def _ndjson_chunks(r: _Request, generation: Generation) -> AsyncIterator[bytes]:
    reply = tools.ReplyStream(r.plan)
    try:
        async for piece in generation:
            text = reply.feed(piece)
            if text:
                yield ndjson(r.frame(text, False))
        if generation.stopped == "cancelled":
            raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping")
        rest, calls = reply.finish()
        if rest or calls:
            yield ndjson(r.frame(rest, False, calls))
        yield ndjson(r.frame("", True, **_stats(generation, r.started)))
    except CorralError as exc:
        yield ndjson(ollama_body(exc, status_for(exc)))


async def _answer(request: Request, r: _Request, op: str, payload: Any) -> Response:
    options = {**r.options, **r.load_options}
    if not r.stream:
        generation, text = await rs.complete(request, op, r.model, payload, options)
        content, calls = tools.parse(text, r.plan)
        return JSONResponse(r.frame(content, True, calls, **_stats(generation, r.started)))
    generation = await rs.open_generation(request, op, r.model, payload, options)
    return EventStream(_ndjson_chunks(r, generation), generation.cancel, "application/x-ndjson")


async def generate(request: Request) -> Response:
    req = await rs.body(request, schemas.OllamaGenerateRequest)
    r = _Request(req, chat=False)
    if req.images:
        raise BadRequest("images: corral's models take text only")
    if not req.prompt:
        return await _load_or_unload(request, r)
    if req.raw:
        return await _answer(request, r, "generate", req.prompt)
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + [{"role": "user", "content": req.prompt}]
    return await _answer(request, r, "chat", messages)


async def chat(request: Request) -> Response:
    req = await rs.body(request, schemas.OllamaChatRequest)
    r = _Request(req, chat=True)
    r.plan = rs.for_model(request, r.model, sampling.ollama_tools(req.tools))
    if r.plan.active and req.format:
        raise BadRequest("format: cannot be combined with tools; send one of them")
    r.options.update(tools.sampling_options(r.plan))
    if not req.messages:
        return await _load_or_unload(request, r)
    return await _answer(request, r, "chat", tools.with_instructions(sampling.ollama_messages(req.messages), r.plan))


def _details(info: ModelInfo) -> dict:
    return {
        "parent_model": "",
        "format": info.format,
        "family": info.family,
        "families": [info.family],
        "parameter_size": info.parameters,
        "quantization_level": info.quantization,
    }



async def tags(request: Request) -> Response:
    models = [
        {"name": m.tagged_name, "model": m.tagged_name, "modified_at": rs.iso_time(m.created), "size": m.size, "digest": m.digest, "details": _details(m)}
        for m in list_models(rs.settings(request))
    ]
    return JSONResponse({"models": models})


async def ps(request: Request) -> Response:
    settings = rs.settings(request)
    out = []
    for row in await rs.link(request).ps():
        if row.get("replica_of"):
            continue  # Ollama lists a model once
        try:
            info = find_model(settings, row["model"])
        except CorralError:
            continue
        expires = row.get("expires_at")
        out.append({
            "name": info.tagged_name,
            "model": info.tagged_name,
            "size": row.get("rss_bytes") or row.get("estimate_bytes") or info.size,
            "digest": info.digest,
            "details": _details(info),
            "expires_at": rs.iso_time(expires) if expires is not None else _FOREVER,
            "size_vram": 0,
            "context_length": row.get("context_length"),
        })
    return JSONResponse({"models": out})


async def show(request: Request) -> Response:
    req = await rs.body(request, schemas.OllamaShowRequest)
    name = req.model or req.name
    if not name:
        raise BadRequest("model: name the model to show")
    info = find_model(rs.settings(request), sampling.model_name(name))
    return JSONResponse({
        "modelfile": f"# corral catalog entry\nFROM {info.name}\n",
        "parameters": f"num_ctx {info.context_length}",
        "template": "",
        "details": _details(info),
        "model_info": header_facts(info),
        # tools run through grammars, which llama.cpp has and ctransformers lacks
        "capabilities": ["completion"] + (["embedding", "tools"] if info.backend == "llama.cpp" else []),
        "modified_at": rs.iso_time(info.created),
    })


async def embed(request: Request) -> Response:
    req = await rs.body(request, schemas.OllamaEmbedRequest)
    model = sampling.model_name(req.model)
    inputs = [req.input] if isinstance(req.input, str) else req.input
    started = time.perf_counter()
    kwargs = {"keep_alive": req.keep_alive} if req.keep_alive is not None else {}
    result = await rs.link(request).embed(model, inputs, **kwargs)
    return JSONResponse({
        "model": model,
        "embeddings": result["embeddings"],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "prompt_eval_count": result.get("usage", {}).get("prompt_tokens", 0),
    })


async def pull(request: Request) -> Response:
    """Pull a model into the store: Ollama's progress events as NDJSON, or
    one object with ``"stream": false``."""
    req = await rs.body(request, schemas.OllamaPullRequest)
    name = req.model or req.name
    if not name:
        raise BadRequest("model: name the model to pull")
    reference = sampling.model_name(name)
    settings = rs.settings(request)
    if not req.stream:
        result = await store_api.pull_model(reference, settings)
        return JSONResponse({"status": "success", "model": result.display, "digest": result.id})

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in store_api.pull_events(reference, settings):
                yield ndjson(event)
        except CorralError as exc:
            yield ndjson(ollama_body(exc, status_for(exc)))
        except Exception as exc:  # noqa: BLE001 -- a bug must still end the stream with an error event
            log.error("pull failed unexpectedly", model=reference, error=repr(exc))
            error = CorralError(f"the pull failed ({type(exc).__name__}); see the gateway log, then pull again")
            yield ndjson(ollama_body(error, 500))

    stream = events()
    return EventStream(stream, stream.aclose, "application/x-ndjson")


def _version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


async def version(request: Request) -> Response:
    return JSONResponse({"version": _version()})


def routes() -> list[Route]:
    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/version", version, methods=["GET"]),
    ]
