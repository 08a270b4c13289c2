"""Anthropic's Messages API: ``POST /v1/messages`` (whole, or streamed as
Anthropic's named events) and ``POST /v1/messages/count_tokens``, with
text, ``tool_use`` and ``tool_result`` blocks. Tool calls run through
``tools.py`` like the OpenAI routes'; errors take Anthropic's shape
(``errors.anthropic_body``) and ``x-api-key`` is accepted as the key."""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.gateway import route_support as rs
from corral.gateway import sampling, schemas, tools
from corral.gateway.errors import anthropic_body, status_for
from corral.gateway.route_support import JSONResponse
from corral.gateway.sse import SSE_HEADERS, EventStream, sse_event
from corral.gateway.supervisor_link import Generation
from corral.supervisor.errors import BadRequest, Cancelled, CorralError

_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def messages_of(req: schemas.AnthropicCountRequest) -> list[dict[str, str]]:
    """The system prompt and messages as corral's, tool blocks in the
    generic tool form."""
    out = [{"role": "system", "content": sampling.joined_text("system", req.system)}] if req.system else []
    names: dict[str, str] = {}  # tool_use id -> tool name
    for i, m in enumerate(req.messages):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts: list[str] = []
        calls: list[tuple[Any, ...]] = []
        for j, block in enumerate(m.content):
            where = f"messages[{i}].content[{j}]"
            if block.type == "text" and block.text is not None:
                texts.append(block.text)
            elif block.type == "tool_use" and m.role == "assistant" and block.name:
                names[block.id or ""] = block.name
                calls.append((block.name, block.input or {}, block.id))
            elif block.type == "tool_result" and m.role == "user":
                result = sampling.joined_text(f"{where}.content", block.content)
                if block.is_error:
                    result = "error: " + result
                out.append(tools.past_result(result, name=names.get(block.tool_use_id or ""), call=block.tool_use_id))
            elif block.type in ("thinking", "redacted_thinking"):
                continue  # another model's reasoning: nothing to tell this one
            else:
                raise BadRequest(f"{where}.type: corral's models take text, tool_use (assistant) and tool_result (user) blocks, not {block.type!r}")
        content = "".join(texts)
        if calls:
            out.append(tools.past_calls(calls, content))
        elif content or not any(b.type == "tool_result" for b in m.content):
            out.append({"role": m.role, "content": content})
    return out


def plan_of(req: schemas.AnthropicCountRequest) -> tools.Plan:
    choice = req.tool_choice
    functions = [tools.function(f"tools[{i}]", t.name, t.description, t.input_schema) for i, t in enumerate(req.tools or [])]
    if choice is not None and choice.type == "tool" and not choice.name:
        raise BadRequest("tool_choice.name: a tool_choice of type 'tool' names the tool")
    name = choice.name if choice is not None and choice.type == "tool" else _CHOICES[choice.type if choice else "auto"]
    parallel = not (choice is not None and choice.disable_parallel_tool_use)
    return tools.plan(functions, name, parallel, where="tool_choice.name" if choice is not None and choice.type == "tool" else "tool_choice")


def _stop_reason(generation: Generation, calls: list[tools.Call]) -> str:
    if calls:
        return "tool_use"
    if generation.stopped == "length":
        return "max_tokens"
    return "stop_sequence" if generation.stop_sequence else "end_turn"


def _usage(generation: Generation) -> dict[str, int]:
    return {"input_tokens": generation.usage.get("prompt_tokens", 0), "output_tokens": generation.usage.get("completion_tokens", 0)}


def _tool_block(call: tools.Call) -> dict:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_object()}


async def messages(request: Request) -> Response:
    req = await rs.body(request, schemas.AnthropicRequest)
    model = sampling.model_name(req.model)
    p = rs.for_model(request, model, plan_of(req))
    options = {"max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
               "stop": req.stop_sequences, **tools.sampling_options(p)}
    options = {k: v for k, v in options.items() if v is not None}
    conversation = tools.with_instructions(messages_of(req), p)
    message_id = "msg_" + os.urandom(12).hex()
    if not req.stream:
        generation, text = await rs.complete(request, "chat", model, conversation, options)
        content, calls = tools.parse(text, p, id_prefix="toolu_")
        blocks = [_tool_block(c) for c in calls] if calls else [{"type": "text", "text": content or ""}]
        return JSONResponse({
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": _stop_reason(generation, calls), "stop_sequence": generation.stop_sequence, "usage": _usage(generation),
        })
    generation = await rs.open_generation(request, "chat", model, conversation, options)
    return EventStream(_events(message_id, model, p, generation), generation.cancel, "text/event-stream", SSE_HEADERS)


async def _events(message_id: str, model: str, p: tools.Plan, generation: Generation) -> AsyncIterator[bytes]:
    """Anthropic's event sequence: message_start, a content block per text
    or tool_use (start, deltas, stop), message_delta, message_stop."""
    def event(kind: str, **data: Any) -> bytes:
        return sse_event(kind, {"type": kind, **data})

    yield event("message_start", message={
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
    })
    yield event("ping")
    reply = tools.ReplyStream(p, id_prefix="toolu_")
    text_open = False
    try:
        async for piece in generation:
            text = reply.feed(piece)
            if text:
                if not text_open:
                    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
                    text_open = True
                yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})
        if generation.stopped == "cancelled":
            raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping")
        rest, calls = reply.finish()
        if not calls or text_open:
            if not text_open:
                yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
            if rest:
                yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": rest})
            yield event("content_block_stop", index=0)
        first = 1 if text_open else 0
        for i, call in enumerate(calls, start=first):
            yield event("content_block_start", index=i, content_block={"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            yield event("content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": call.arguments})
            yield event("content_block_stop", index=i)
        yield event("message_delta", delta={"stop_reason": _stop_reason(generation, calls), "stop_sequence": generation.stop_sequence},
                    usage={"output_tokens": generation.usage.get("completion_tokens", 0)})
        yield event("message_stop")
    except CorralError as exc:
        # The status line is gone already: the error travels as an event.
        yield event("error", error=anthropic_body(exc, status_for(exc))["error"])


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as the model's own template and tokenizer make
    them: one prompt evaluation and a single token, whose usage counts it."""
    req = await rs.body(request, schemas.AnthropicCountRequest)
    model = sampling.model_name(req.model)
    p = rs.for_model(request, model, plan_of(req))
    generation, _ = await rs.complete(request, "chat", model, tools.with_instructions(messages_of(req), p),
                                      {**tools.sampling_options(p), "max_tokens": 1})
    return JSONResponse({"input_tokens": generation.usage.get("prompt_tokens", 0)})


def routes(prefix: str = "/v1") -> list[Route]:
    return [
        Route(f"{prefix}/messages", messages, methods=["POST"]),
        Route(f"{prefix}/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
