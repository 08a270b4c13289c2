"""Tool calls in the generic JSON form, for every API that carries them
(OpenAI chat, Ollama chat, Anthropic Messages, OpenAI Responses).

A model whose chat template knows no tools (SmolLM2 among them) is told the
tools in a system message, and its answer is constrained by a JSON schema
(the worker turns it into a grammar) to one of two shapes::

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    {"response": "text for the user"}

only the first when a call is required or one function is named, so even
the bundled 135M model answers with a call that names a real function and
whose arguments match its schema. Each API module maps its own fields onto
a :class:`Plan` and the answer back with :func:`parse` or
:class:`ReplyStream`. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from corral.gateway.tool_formats import Format, hold_back
from corral.supervisor.errors import BadRequest

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TOOLS = 128
# All the tools' schemas become one grammar; the wire caps a schema at 1 MiB.
MAX_SCHEMA_BYTES = 256 * 1024
# What the model is told, once, before the conversation.
_INTRO = (
    "You can call these tools. Answer in JSON only: either "
    '{"tool_calls": [{"name": <tool name>, "arguments": <arguments object>}]} to call tools, '
    'or {"response": <text>} to answer the user directly.'
)
_INTRO_REQUIRED = (
    "You can call these tools and must call at least one. Answer in JSON only: "
    '{"tool_calls": [{"name": <tool name>, "arguments": <arguments object>}]}.'
)


@dataclass(frozen=True)
class Function:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it

    def arguments_object(self) -> Any:
        return json.loads(self.arguments)


@dataclass(frozen=True)
class Plan:
    """The tools one request offers and how the model may use them."""

    functions: tuple[Function, ...] = ()
    choice: str = "auto"  # "auto", "required", "none" or a function's name
    parallel: bool = True
    # the model's own call syntax, when its chat template renders tools
    # (``tool_formats.py``); None: the generic JSON form
    format: Format | None = None

    @property
    def active(self) -> bool:
        return bool(self.functions) and self.choice != "none"

    @property
    def required(self) -> bool:
        return self.choice not in ("auto", "none")


NO_TOOLS = Plan()


def call_id(prefix: str = "call_") -> str:
    return prefix + os.urandom(12).hex()


def function(where: str, name: Any, description: Any, parameters: Any) -> Function:
    """One tool checked: ``where`` names its field in errors (``tools[2].function``)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise BadRequest(f"{where}.name: a tool's name is 1 to 64 letters, digits, '_', '.' or '-', not {str(name)[:80]!r}")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"{where}.description: must be a string")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}.parameters: must be a JSON schema object, not {type(parameters).__name__}")
    if parameters.get("type", "object") != "object":
        raise BadRequest(f"{where}.parameters.type: a tool's arguments are an object; use \"object\", not {parameters.get('type')!r}")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
        raise BadRequest(f"{where}.parameters.properties: must map each argument's name to a JSON schema object")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise BadRequest(f"{where}.parameters.required: must be a list of argument names")
    size = len(json.dumps(parameters))
    if size > MAX_SCHEMA_BYTES:
        raise BadRequest(f"{where}.parameters: the schema is {size // 1024} KiB; a tool's schema may be at most {MAX_SCHEMA_BYTES // 1024} KiB")
    missing = [r for r in required if r not in properties]
    if missing:
        raise BadRequest(f"{where}.parameters.required: {missing[0]!r} is required but not among the properties")
    return Function(name, description or "", parameters)


def plan(functions: Iterable[Function], choice: str, parallel: bool = True, *, where: str = "tool_choice") -> Plan:
    """A :class:`Plan`; a named choice must name one of the functions."""
    functions = tuple(functions)
    if len(functions) > MAX_TOOLS:
        raise BadRequest(f"tools: at most {MAX_TOOLS} tools per request, not {len(functions)}")
    total = sum(len(json.dumps(f.parameters)) for f in functions)
    if total > 3 * MAX_SCHEMA_BYTES:
        raise BadRequest(f"tools: their schemas come to {total // 1024} KiB; all tools' schemas together may be at most {3 * MAX_SCHEMA_BYTES // 1024} KiB")
    names = [f.name for f in functions]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise BadRequest(f"tools: the name {duplicate!r} is used twice; tool names must be unique")
    if choice not in ("auto", "none") and not functions:
        raise BadRequest(f"{where}: there are no tools to choose from; send tools or leave {where} unset")
    if choice not in ("auto", "required", "none") and choice not in names:
        raise BadRequest(f"{where}: no tool is named {choice!r}; the tools are {', '.join(names)}")
    return Plan(functions, choice, parallel)


def _call_schema(f: Function) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": f.name}, "arguments": f.parameters},
        "required": ["name", "arguments"],
    }


def _offered(p: Plan) -> list[Function]:
    return [f for f in p.functions if p.choice in ("auto", "required", f.name)]


def schema(p: Plan) -> dict[str, Any]:
    """The JSON schema the answer is constrained by."""
    calls = [_call_schema(f) for f in _offered(p)]
    items = calls[0] if len(calls) == 1 else {"anyOf": calls}
    array: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
    if not p.parallel:
        array["maxItems"] = 1
    tool_form = {"type": "object", "properties": {"tool_calls": array}, "required": ["tool_calls"]}
    if p.required:
        return tool_form
    text_form = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
    return {"anyOf": [tool_form, text_form]}


def instructions(p: Plan) -> str:
    """The system text that tells the model its tools."""
    lines = [_INTRO_REQUIRED if p.required else _INTRO]
    if p.choice not in ("auto", "required"):
        lines.append(f"Call the tool {p.choice}.")
    if not p.parallel:
        lines.append("Call at most one tool at a time.")
    lines.append("Tools:")
    for f in _offered(p):
        spec = {"name": f.name, "description": f.description, "parameters": f.parameters}
        lines.append(json.dumps(spec, ensure_ascii=False))
    return "\n".join(lines)


def with_instructions(messages: list[dict[str, Any]], p: Plan) -> list[dict[str, Any]]:
    """``messages`` as the wire carries them. In the generic form the tools
    are told in the first system message (or a new one before the
    conversation) and past calls and results are the JSON turns
    :func:`past_calls` and :func:`past_result` wrote; for a template that
    renders tools, they are tool calls and tool turns for it to render."""
    if p.format is not None:
        return [_native(m) for m in messages]
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not p.active:
        return messages
    text = instructions(p)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _native(m: dict[str, Any]) -> dict[str, Any]:
    if "calls" in m:
        return {"role": "assistant", "content": m["text"], "tool_calls": json.dumps(m["calls"], ensure_ascii=False)}
    if "result" in m:
        r = m["result"]
        return {"role": "tool", "content": r["content"], **{k: r[k] for k in ("tool_call_id", "name") if r.get(k)}}
    return {"role": m["role"], "content": m["content"]}


def sampling_options(p: Plan) -> dict[str, Any]:
    """The request's options for the tools: the schema that constrains the
    answer, and for a template that renders tools, the tools themselves and
    the call's opening when a call is required. None when no tools apply."""
    if not p.active:
        return {}
    if p.format is None:
        return {"json_schema": json.dumps(schema(p))}
    rendered = [{"type": "function", "function": {"name": f.name, "description": f.description, "parameters": f.parameters}}
                for f in p.functions]
    options: dict[str, Any] = {"tools": rendered}
    if p.required:
        calls = [_call_schema(f) for f in _offered(p)]
        options["json_schema"] = json.dumps(p.format.schema(calls, p.parallel))
        options["assistant_prefix"] = p.format.prefix(p.parallel)
    return options


# -- the conversation so far, in the same form --------------------------------


def past_calls(calls: Iterable[tuple[Any, ...]], text: str = "") -> dict[str, Any]:
    """An assistant turn that said ``text`` and called tools: (name,
    arguments as an object or JSON text[, call id]) tuples. Its content is
    the turn in the generic form, as the model would have written it; the
    calls themselves go with it for a template that renders tools."""
    out = []
    for name, arguments, *call in calls:
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # a client's own malformed history: kept as text
        out.append({"name": name, "arguments": arguments, **({"id": call[0]} if call and call[0] else {})})
    generic = json.dumps({"tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in out]}, ensure_ascii=False)
    return {"role": "assistant", "content": (text + "\n" if text else "") + generic, "text": text, "calls": out}


def past_result(content: str, *, name: str | None = None, call: str | None = None) -> dict[str, Any]:
    """A tool's result: in the generic form, the user turn that hands it
    back to the model; the result itself goes with it for a template that
    renders tool turns."""
    result: dict[str, Any] = {"content": content}
    if name:
        result["name"] = name
    if call:
        result["tool_call_id"] = call
    return {"role": "user", "content": json.dumps({"tool_result": result}, ensure_ascii=False), "result": result}


# -- the answer ----------------------------------------------------------------


def parse(text: str, p: Plan, *, id_prefix: str = "call_") -> tuple[str | None, list[Call]]:
    """The answer as (text for the user, tool calls). An answer that is not
    the JSON asked for (cut short by max_tokens) is returned as text."""
    if not p.active:
        return text, []
    if p.format is not None:
        content, pairs = p.format.read((p.format.prefix(p.parallel) if p.required else "") + text)
        calls = [Call(call_id(id_prefix), name, json.dumps(args, ensure_ascii=False)) for name, args in pairs]
        return (content or None, calls) if calls else (text, [])
    try:
        # strict=False: the grammar lets control characters into strings
        answer = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return text, []
    if isinstance(answer, dict) and isinstance(answer.get("tool_calls"), list):
        calls = []
        for c in answer["tool_calls"]:
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                calls.append(Call(call_id(id_prefix), c["name"], json.dumps(c.get("arguments", {}), ensure_ascii=False)))
        if calls:
            return None, calls
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return answer["response"], []
    return text, []


_TEXT_FORM = re.compile(r'^\s*\{\s*"response"\s*:\s*"')
_PARTIAL_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{0,3})?$')


class ReplyStream:
    """Streams the text of a ``{"response": ...}`` answer as it is decoded;
    tool calls come whole at the end (a half-written call is no use to a
    client). Feed each piece; ``finish`` gives what :func:`parse` gives."""

    def __init__(self, p: Plan, *, id_prefix: str = "call_"):
        self.plan = p
        self.id_prefix = id_prefix
        self.buffer = ""
        self.sent = ""  # the response text already handed out

    def feed(self, piece: str) -> str:
        """Text for the user that ``piece`` completes ("" if none yet)."""
        if not self.plan.active:
            return piece
        self.buffer += piece
        fmt = self.plan.format
        if fmt is not None:  # text up to where a call may be starting; a required call is all call
            text = "" if self.plan.required else self.buffer[:hold_back(fmt, self.buffer)]
            if not text.startswith(self.sent):  # a call began: nothing more is text
                return ""
            new, self.sent = text[len(self.sent):], text
            return new
        match = _TEXT_FORM.match(self.buffer)
        if not match:
            return ""
        text = self._decoded(self.buffer[match.end():])
        new, self.sent = text[len(self.sent):], text
        return new

    @staticmethod
    def _decoded(raw: str) -> str:
        end = _closing_quote(raw)
        body = raw[:end] if end is not None else _PARTIAL_ESCAPE.sub("", raw)
        try:
            text = json.loads('"' + body + '"', strict=False)
        except json.JSONDecodeError:
            return ""
        if text and "\ud800" <= text[-1] <= "\udbff":  # half a surrogate pair
            text = text[:-1]
        return text

    def finish(self) -> tuple[str | None, list[Call]]:
        """(the rest of the text, tool calls) once the answer has ended."""
        if not self.plan.active:
            return "", []
        text, calls = parse(self.buffer, self.plan, id_prefix=self.id_prefix)
        if self.plan.format is not None:
            rest = (text or "")[len(self.sent):] if (text or "").startswith(self.sent) else ""
            return (rest or None, calls) if calls else (self.buffer[len(self.sent):], [])
        if calls:
            return None, calls
        match = _TEXT_FORM.match(self.buffer)
        if match:  # whole or cut short: what decodes of it, past what was sent
            return self._decoded(self.buffer[match.end():])[len(self.sent):], []
        return text, []


def _closing_quote(raw: str) -> int | None:
    i = 0
    while i < len(raw):
        if raw[i] == "\\":
            i += 2
            continue
        if raw[i] == '"':
            return i
        i += 1
    return None
