"""llama-server's own routes, for tools that speak its API rather than
OpenAI's: ``POST /completion`` (whole, or streamed as SSE chunks ending in
one with ``stop: true`` and ``timings``; the prompt as text or token ids),
``POST /tokenize``, ``/detokenize`` and ``/apply-template``, ``GET /health``
and ``GET /props``. ``model`` may be left out: the default model
(``CORRAL_DEFAULT_MODEL``) or else the one model loaded runs it. The
facts /props gives come from the catalog and the model file, so asking
never starts a worker; the model's path is never shown.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.configs import catalog
from corral.gateway import route_support as rs
from corral.gateway import sampling, schemas, tools
from corral.gateway.route_support import JSONResponse
from corral.gateway.sse import SSE_HEADERS, EventStream, sse
from corral.gateway.supervisor_link import Generation
from corral.supervisor.errors import BadRequest, CorralError
from corral.supervisor.memory import worker_sequences
from corral.supervisor.model_files import read_header


def completion_options(req: schemas.LlamaCompletionRequest) -> dict[str, Any]:
    if req.id_slot not in (None, -1):
        raise BadRequest("id_slot: corral places each request in a slot itself; leave id_slot unset or -1")
    if req.grammar is not None and req.json_schema is not None:
        raise BadRequest("grammar: cannot be combined with json_schema; send one of them")
    options: dict[str, Any] = {
        "max_tokens": None if req.n_predict is None or req.n_predict < 0 else req.n_predict,
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "min_p": req.min_p,
        "repeat_penalty": req.repeat_penalty, "repeat_last_n": req.repeat_last_n,
        "presence_penalty": req.presence_penalty, "frequency_penalty": req.frequency_penalty,
        "seed": None if req.seed in (None, -1) else req.seed,  # -1: llama-server's "random"
        "stop": req.stop or None, "grammar": req.grammar,
        "json_schema": None if req.json_schema is None else sampling.json_schema_text(req.json_schema),
        "logprobs": req.n_probs or None,
    }
    if options["max_tokens"] == 0:
        raise BadRequest("n_predict: corral predicts at least 1 token; use 1 or more, or -1 for no limit")
    return {k: v for k, v in options.items() if v is not None}


def _stop_type(generation: Generation) -> str:
    if generation.stopped == "length":
        return "limit"
    if generation.stop_sequence:
        return "word"
    return "eos" if generation.stopped == "stop" else "none"


def timings(generation: Generation) -> dict[str, float]:
    """llama-server's timings from corral's (time to first token stands for
    the prompt's evaluation)."""
    t, usage = generation.timings, generation.usage
    prompt_n, predicted_n = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    prompt_ms = t.get("ttft_ms", 0.0)
    predicted_ms = max(0.0, t.get("total_ms", 0.0) - prompt_ms)

    def per(n: int, ms: float) -> tuple[float, float]:
        return (ms / n if n else 0.0), (n * 1000.0 / ms if ms else 0.0)

    prompt_per_token_ms, prompt_per_second = per(prompt_n, prompt_ms)
    predicted_per_token_ms, predicted_per_second = per(predicted_n, predicted_ms)
    return {
        "prompt_n": prompt_n, "prompt_ms": prompt_ms, "prompt_per_token_ms": prompt_per_token_ms,
        "prompt_per_second": prompt_per_second, "predicted_n": predicted_n, "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_per_token_ms, "predicted_per_second": predicted_per_second,
    }


def _probabilities(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log probabilities in llama-server's ``completion_probabilities`` shape."""
    def one(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "bytes": e["bytes"], "logprob": e["logprob"]}

    return [{**one(e), "top_logprobs": [one(t) for t in e["top_logprobs"]]} for e in entries]


def _final(model: str, prompt: str, text: str, generation: Generation, probs: bool) -> dict[str, Any]:
    body = {
        "index": 0, "content": text, "tokens": [], "id_slot": 0, "stop": True, "model": model,
        "tokens_predicted": generation.usage.get("completion_tokens", 0),
        "tokens_evaluated": generation.usage.get("prompt_tokens", 0),
        "prompt": prompt, "has_new_line": "\n" in text, "truncated": False,
        "stop_type": _stop_type(generation), "stopping_word": generation.stop_sequence or "",
        "tokens_cached": 0, "timings": timings(generation),
    }
    if probs:
        body["completion_probabilities"] = _probabilities(generation.take_logprobs())
    return body


async def completion(request: Request) -> Response:
    req = await rs.body(request, schemas.LlamaCompletionRequest)
    model = await rs.model_for(request, req.model)
    options = completion_options(req)
    if isinstance(req.prompt, str):
        prompt = req.prompt
    else:  # token ids: the worker checks them against the vocabulary
        if not req.prompt:
            raise BadRequest("prompt: the prompt is empty; send text or at least one token id")
        prompt, options = "", {**options, "tokens": req.prompt}
    if not req.stream:
        generation, text = await rs.complete(request, "generate", model, prompt, options)
        return JSONResponse(_final(model, prompt, text, generation, "logprobs" in options))
    generation = await rs.open_generation(request, "generate", model, prompt, options)
    return EventStream(_chunks(model, prompt, generation, "logprobs" in options), generation.cancel,
                       "text/event-stream", SSE_HEADERS)


def _piece(raw: bytes) -> str | list[int]:
    """A token's text as llama-server shows it: a string, or its bytes when
    they are not whole UTF-8 (part of a character)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


async def tokenize(request: Request) -> Response:
    req = await rs.body(request, schemas.LlamaTokenizeRequest)
    model = await rs.model_for(request, req.model)
    answer = await rs.link(request).tokenizer("tokenize", model, req.content, special=req.add_special, pieces=req.with_pieces)
    if req.with_pieces:
        return JSONResponse({"tokens": [{"id": t, "piece": _piece(p)} for t, p in zip(answer["tokens"], answer["pieces"])]})
    return JSONResponse({"tokens": answer["tokens"]})


async def detokenize(request: Request) -> Response:
    req = await rs.body(request, schemas.LlamaDetokenizeRequest)
    model = await rs.model_for(request, req.model)
    return JSONResponse({"content": await rs.link(request).tokenizer("detokenize", model, req.tokens)})


async def apply_template(request: Request) -> Response:
    req = await rs.body(request, schemas.LlamaTemplateRequest)
    model = await rs.model_for(request, req.model)
    messages = tools.with_instructions(sampling.openai_messages(req.messages), tools.NO_TOOLS)  # as the wire carries them
    return JSONResponse({"prompt": await rs.link(request).tokenizer("render_chat", model, messages)})


async def _chunks(model: str, prompt: str, generation: Generation, probs: bool) -> AsyncIterator[bytes]:
    try:
        async for piece in generation:
            chunk: dict[str, Any] = {"index": 0, "content": piece, "tokens": [], "stop": False, "id_slot": -1,
                                     "tokens_predicted": 0, "tokens_evaluated": 0}
            if probs:
                chunk["completion_probabilities"] = _probabilities(generation.take_logprobs())
            yield sse(chunk)
        yield sse(_final(model, prompt, "", generation, probs))
    except CorralError as exc:
        yield sse({"error": {"code": 500, "message": exc.message, "type": "server_error"}})


async def health(request: Request) -> Response:
    """200 while the supervisor answers; 503 while the model named by
    ``?model=`` (or the default) is loading, as llama-server answers while
    it loads its model."""
    try:
        rows = await rs.link(request).ps()
    except CorralError as exc:
        return _unavailable(f"the supervisor does not answer: {exc.message}")
    name = request.query_params.get("model") or rs.settings(request).default_model
    if name:
        wanted = catalog.canonical_name(sampling.model_name(name))
        if any(catalog.canonical_name(r["model"]) == wanted and r.get("state") == "loading" for r in rows):
            return _unavailable("Loading model")
    return JSONResponse({"status": "ok"})


def _unavailable(message: str) -> Response:
    return JSONResponse({"error": {"code": 503, "message": message, "type": "unavailable_error"}}, status_code=503)


async def props(request: Request) -> Response:
    """The model's facts as llama-server's /props gives them: context,
    chat template, slots; read from the catalog and the file header."""
    name = await rs.model_for(request, request.query_params.get("model"))
    spec = catalog.resolve(name, rs.settings(request), names_only=True)
    template = spec.chat_template
    if template is None and spec.backend == catalog.LLAMA_CPP:
        template = read_header(spec.path).chat_template
    slots = worker_sequences(spec, rs.settings(request).parallel)  # what one worker decodes together
    return JSONResponse({
        "default_generation_settings": {"n_ctx": spec.context_length, "params": {}},
        "total_slots": slots,
        "model_alias": spec.name,
        "chat_template": template or "",
        "modalities": {"vision": False, "audio": False},
        "build_info": "corral",
    })


def routes() -> list[Route]:
    return [
        Route("/completion", completion, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/apply-template", apply_template, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/props", props, methods=["GET"]),
    ]
