"""OpenAI's Responses API: ``POST /v1/responses`` (whole or streamed as its
typed events), ``GET`` and ``DELETE /v1/responses/{id}``.

Input is a string or a list of items (messages, ``function_call`` and
``function_call_output``); output is a ``message`` item and/or
``function_call`` items, tool calls running through ``tools.py`` like the
chat route's. A stored response (``store``, the default) is kept in
``CORRAL_HOME`` (``response_store.py``), the newest 1,000 of them, so that
``previous_response_id`` carries a conversation on as OpenAI's does.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from corral.gateway import route_support as rs
from corral.gateway import sampling, schemas, tools
from corral.gateway.errors import status_for
from corral.gateway.response_store import Store
from corral.gateway.route_support import JSONResponse
from corral.gateway.sse import SSE_HEADERS, EventStream, sse_event
from corral.gateway.supervisor_link import Generation
from corral.supervisor.errors import BadRequest, Cancelled, CorralError

_TEXT_PARTS = ("input_text", "output_text", "text")  # the text parts of input items


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


# -- input items -> corral's messages (pure) -----------------------------------


def _content(where: str, content: Any) -> str:
    """An item's text; unlike a chat message's, it may not be left out."""
    if content is None:
        raise BadRequest(f"{where}: a message's content is a string or a list of text parts")
    return sampling.joined_text(where, content, _TEXT_PARTS)


def input_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``input`` field as messages; consecutive function calls are one
    assistant turn, as a model writes them."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call_id -> function name
    pending: list[tuple[Any, ...]] = []

    def flush() -> None:
        if pending:
            out.append(tools.past_calls(pending))
            pending.clear()

    for i, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments", "{}")
            if not isinstance(name, str) or not isinstance(arguments, str):
                raise BadRequest(f"{where}: a function_call needs a name and its arguments as a JSON string")
            names[str(item.get("call_id", ""))] = name
            pending.append((name, arguments, item.get("call_id")))
            continue
        flush()
        if kind == "function_call_output":
            output = _content(f"{where}.output", item.get("output"))
            call = str(item.get("call_id", ""))
            out.append(tools.past_result(output, name=names.get(call), call=call or None))
        elif kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"{where}.role: use user, assistant, system or developer, not {str(role)[:40]!r}")
            out.append({"role": "system" if role == "developer" else role, "content": _content(f"{where}.content", item.get("content"))})
        elif kind != "reasoning":  # a reasoning item another server made: nothing to tell this model
            raise BadRequest(f"{where}.type: corral takes message, function_call and function_call_output items, not {str(kind)[:40]!r}")
    flush()
    return out


def plan_for(req: schemas.ResponsesRequest) -> tools.Plan:
    functions = [tools.function(f"tools[{i}]", t.name, t.description, t.parameters) for i, t in enumerate(req.tools or [])]
    named = isinstance(req.tool_choice, schemas.ResponsesNamedChoice)
    choice = req.tool_choice.name if named else (req.tool_choice or "auto")
    return tools.plan(functions, choice, req.parallel_tool_calls is not False, where="tool_choice.name" if named else "tool_choice")


def options_for(req: schemas.ResponsesRequest, p: tools.Plan) -> dict[str, Any]:
    options: dict[str, Any] = {"max_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed}
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type != "text":
        if p.active:
            raise BadRequest("text.format: cannot be combined with tools; send one of them (or tool_choice \"none\")")
        options["json_schema"] = sampling.json_schema_text(fmt.schema if fmt.type == "json_schema" else None)
    options.update(tools.sampling_options(p))
    return {k: v for k, v in options.items() if v is not None}


# -- the response object ---------------------------------------------------------


def _message_item(text: str, status: str, item_id: str | None = None) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" else []
    return {"type": "message", "id": item_id or _new_id("msg_"), "status": status, "role": "assistant", "content": content}


def _call_item(call: tools.Call, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_" + call.id.removeprefix("call_"), "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status == "completed" else "", "status": status}


class _Answer:
    """One response being made: its fixed fields, then its output."""

    def __init__(self, req: schemas.ResponsesRequest, model: str, p: tools.Plan):
        self.req, self.model, self.plan = req, model, p
        self.id = _new_id("resp_")
        self.created = rs.unix_now()
        self.output: list[dict] = []
        self.status = "in_progress"
        self.usage: dict | None = None
        self.incomplete: dict | None = None

    def body(self) -> dict:
        req = self.req
        choice = req.tool_choice
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": self.status, "model": self.model,
            "error": None, "incomplete_details": self.incomplete, "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens, "output": self.output,
            "parallel_tool_calls": req.parallel_tool_calls is not False, "previous_response_id": req.previous_response_id,
            "temperature": req.temperature, "top_p": req.top_p,
            "tool_choice": {"type": "function", "name": choice.name} if isinstance(choice, schemas.ResponsesNamedChoice) else (choice or "auto"),
            "tools": [{"type": "function", "name": f.name, "description": f.description, "parameters": f.parameters, "strict": False}
                      for f in self.plan.functions],
            "text": {"format": {"type": "text"}} if not req.text or not req.text.format else {"format": _format(req.text.format)},
            "store": req.store, "metadata": req.metadata or {}, "usage": self.usage, "user": req.user,
        }

    def end(self, generation: Generation) -> None:
        prompt = generation.usage.get("prompt_tokens", 0)
        completion = generation.usage.get("completion_tokens", 0)
        self.usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}
        if generation.stopped == "length":
            self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
        else:
            self.status = "completed"


def _format(fmt: schemas.ResponsesFormat) -> dict:
    out: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        out.update(name=fmt.name or "response", schema=fmt.schema or {}, strict=bool(fmt.strict))
    return out


def _store(request: Request) -> Store:
    return request.app.state.responses


def _said(text: str | None, calls: list[tools.Call]) -> list[dict[str, Any]]:
    """The assistant's turn, as the next request's history."""
    if calls:
        return [tools.past_calls(((c.name, c.arguments, c.id) for c in calls), text or "")]
    return [{"role": "assistant", "content": text or ""}]


# -- routes --------------------------------------------------------------------


async def create(request: Request) -> Response:
    req = await rs.body(request, schemas.ResponsesRequest)
    model = sampling.model_name(req.model)
    p = rs.for_model(request, model, plan_for(req))
    options = options_for(req, p)
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        history = _store(request).get(req.previous_response_id, "previous_response_id")[1]
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    conversation = history + input_messages(req.input)
    messages = tools.with_instructions(system + conversation, p)
    answer = _Answer(req, model, p)
    if not req.stream:
        generation, text = await rs.complete(request, "chat", model, messages, options)
        content, calls = tools.parse(text, p)
        answer.end(generation)
        answer.output = [_call_item(c) for c in calls] if calls else [_message_item(content or "", answer.status)]
        body = answer.body()
        if req.store:
            _store(request).put(body, conversation + _said(content, calls))
        return JSONResponse(body)
    generation = await rs.open_generation(request, "chat", model, messages, options)
    stream = _events(request, answer, generation, conversation)
    return EventStream(stream, generation.cancel, "text/event-stream", SSE_HEADERS)


async def _events(request: Request, answer: _Answer, generation: Generation, conversation: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The typed events of a streamed response, numbered."""
    seq = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal seq
        seq += 1
        return sse_event(kind, {"type": kind, "sequence_number": seq - 1, **data})

    yield event("response.created", response=answer.body())
    yield event("response.in_progress", response=answer.body())
    reply = tools.ReplyStream(answer.plan)
    message_id = _new_id("msg_")
    text_so_far = ""
    part = {"item_id": message_id, "output_index": 0, "content_index": 0}

    def open_message() -> list[bytes]:
        return [event("response.output_item.added", output_index=0, item=_message_item("", "in_progress", message_id)),
                event("response.content_part.added", **part, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    try:
        async for piece in generation:
            text = reply.feed(piece)
            if text:
                if not text_so_far:
                    for e in open_message():
                        yield e
                text_so_far += text
                yield event("response.output_text.delta", **part, delta=text, logprobs=[])
        if generation.stopped == "cancelled":
            raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping")
        rest, calls = reply.finish()
        answer.end(generation)
        if not calls:
            if not text_so_far:
                for e in open_message():
                    yield e
            if rest:
                text_so_far += rest
                yield event("response.output_text.delta", **part, delta=rest, logprobs=[])
            item = _message_item(text_so_far, answer.status, message_id)
            yield event("response.output_text.done", **part, text=text_so_far, logprobs=[])
            yield event("response.content_part.done", **part, part=item["content"][0])
            yield event("response.output_item.done", output_index=0, item=item)
            answer.output = [item]
        for i, call in enumerate(calls):
            item = _call_item(call)
            yield event("response.output_item.added", output_index=i, item=_call_item(call, "in_progress"))
            yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=call.arguments)
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=i, name=call.name, arguments=call.arguments)
            yield event("response.output_item.done", output_index=i, item=item)
            answer.output.append(item)
        body = answer.body()
        if answer.req.store:
            _store(request).put(body, conversation + _said(text_so_far, calls))
        yield event("response.completed" if answer.status == "completed" else "response.incomplete", response=body)
    except CorralError as exc:
        # The status line is gone already: the error travels as an event.
        yield event("error", code=exc.code, message=exc.message, param=None, status=status_for(exc))


async def retrieve(request: Request) -> Response:
    return JSONResponse(_store(request).get(request.path_params["id"])[0])


async def delete(request: Request) -> Response:
    _store(request).delete(request.path_params["id"])
    return JSONResponse({"id": request.path_params["id"], "object": "response", "deleted": True})


def routes(prefix: str = "/v1") -> list[Route]:
    return [
        Route(f"{prefix}/responses", create, methods=["POST"]),
        Route(f"{prefix}/responses/{{id}}", retrieve, methods=["GET"]),
        Route(f"{prefix}/responses/{{id}}", delete, methods=["DELETE"]),
    ]
