"""From an HTTP request body to the client library's call: model name,
messages and sampling options. Pure functions: no I/O, no state."""

from __future__ import annotations

import json
import re
from typing import Any

from corral.gateway import schemas, tools
from corral.supervisor.errors import BadRequest, ModelNotFound

# A catalog or store reference: `ai/smollm2`, `ai/smollm2:latest`,
# `localhost:5000/ns/name:tag`, `hf.co/org/repo:Q4_K_M`, `name@sha256:...`.
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]*$")
_FILE_SUFFIXES = (".gguf", ".bin", ".ggml", ".ggjt")


def model_name(name: str) -> str:
    """``name`` if it can only be a catalog or store name. Over HTTP a model
    is never a file: anything that looks like a path is "not found" before
    any file is looked at (the supervisor is also told names only)."""
    looks_like_path = (
        not _REFERENCE.match(name)
        or name.lower().endswith(_FILE_SUFFIXES)
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if looks_like_path:
        raise ModelNotFound(
            f"model {name[:80]!r} not found: over HTTP a model is a catalog or store name (see GET /v1/models), never a file path"
        )
    return name


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def json_schema_text(schema: dict[str, Any] | None) -> str:
    """The grammar constraint for "JSON that matches this schema" (any JSON
    object when no schema is given)."""
    return json.dumps(schema if schema is not None else {"type": "object"})


def _penalties(options: dict[str, Any], presence: float | None, frequency: float | None) -> None:
    # 0 is the neutral value: not sending it keeps requests valid for a
    # worker that has no penalties.
    if presence:
        options["presence_penalty"] = presence
    if frequency:
        options["frequency_penalty"] = frequency


def logprobs_option(req: Any) -> int | None:
    """Alternatives per token to report (None: no log probabilities). Chat
    asks with ``logprobs: true`` and ``top_logprobs``; plain completions
    with ``logprobs: N``."""
    if isinstance(req, schemas.ChatCompletionRequest):
        if req.top_logprobs is not None and not req.logprobs:
            raise BadRequest("top_logprobs: needs logprobs set to true")
        return (req.top_logprobs or 0) if req.logprobs else None
    return getattr(req, "logprobs", None)


def openai_options(req: schemas.Sampling, *, max_tokens: int | None = None, response_format: Any = None) -> dict[str, Any]:
    """Client keyword arguments for an OpenAI request's sampling fields."""
    options: dict[str, Any] = {
        "max_tokens": max_tokens if max_tokens is not None else req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "repeat_penalty": req.repeat_penalty,
        "seed": req.seed,
        "stop": stop_list(req.stop),
    }
    _penalties(options, req.presence_penalty, req.frequency_penalty)
    options["logprobs"] = logprobs_option(req)
    if isinstance(response_format, schemas.ResponseFormatJSONObject):
        options["json_schema"] = json_schema_text(None)
    elif isinstance(response_format, schemas.ResponseFormatJSONSchema):
        options["json_schema"] = json_schema_text(response_format.json_schema.schema)
    if req.grammar is not None:
        if "json_schema" in options:
            raise BadRequest("grammar: cannot be combined with a JSON response_format; send one of them")
        options["grammar"] = req.grammar
    return {k: v for k, v in options.items() if v is not None}


MAX_CHOICES = 8


def each_choice(options: dict[str, Any], n: int | None) -> list[dict[str, Any]]:
    """The options of each of ``n`` choices, decoded side by side: a seed
    given is the first choice's, the next ones take the seeds after it (the
    same seed would give the same answer n times)."""
    if n is None:
        n = 1
    if not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"n: corral returns 1 to {MAX_CHOICES} choices per request, not {n}")
    seed = options.get("seed")
    step = 1 if seed is None or seed + n < 2**63 else -1  # stay within the 64 bits the wire carries
    return [options if seed is None or i == 0 else {**options, "seed": seed + step * i} for i in range(n)]


def _part_field(part: Any, name: str) -> Any:
    return part.get(name) if isinstance(part, dict) else getattr(part, name, None)


def joined_text(where: str, content: Any, kinds: tuple[str, ...] = ("text",)) -> str:
    """A message's content as one string: a string as it is, text parts
    (structs or plain maps, of the ``kinds`` an API names them) joined; any
    other part is refused, naming it (``messages[2].content[0].type``)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequest(f"{where}: a message's content is a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        kind, text = _part_field(part, "type"), _part_field(part, "text")
        if kind not in kinds or not isinstance(text, str):
            raise BadRequest(f"{where}[{j}].type: only text parts ({', '.join(kinds)}) are accepted, not {str(kind)[:40]!r}")
        texts.append(text)
    return "".join(texts)


def openai_messages(messages: list[schemas.ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages as corral's: text parts joined, `developer` is a
    system message, tool calls and tool results in the generic tool form
    (``tools.py``); images are refused by name."""
    out = []
    names = {}  # tool call id -> function name, for the results that answer them
    for i, m in enumerate(messages):
        content = joined_text(f"messages[{i}].content", m.content)
        if m.role == "tool":
            out.append(tools.past_result(content, name=names.get(m.tool_call_id or ""), call=m.tool_call_id))
        elif m.role == "assistant" and m.tool_calls:
            names.update((c.id, c.function.name) for c in m.tool_calls)
            out.append(tools.past_calls(((c.function.name, c.function.arguments, c.id) for c in m.tool_calls), content))
        else:
            out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def openai_tools(req: schemas.ChatCompletionRequest) -> tools.Plan:
    """The request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``."""
    functions = [
        tools.function(f"tools[{i}].function", t.function.name, t.function.description, t.function.parameters)
        for i, t in enumerate(req.tools or [])
    ]
    named = isinstance(req.tool_choice, schemas.NamedToolChoice)
    choice = req.tool_choice.function.name if named else (req.tool_choice or "auto")
    p = tools.plan(functions, choice, req.parallel_tool_calls is not False, where="tool_choice.function.name" if named else "tool_choice")
    if p.active and req.response_format is not None and not isinstance(req.response_format, schemas.ResponseFormatText):
        raise BadRequest("response_format: cannot be combined with tools; send one of them (or tool_choice \"none\")")
    return p


def ollama_options(options: schemas.OllamaOptions | None, fmt: str | dict | None) -> dict[str, Any]:
    """Client keyword arguments for Ollama's ``options`` and ``format``."""
    out: dict[str, Any] = {}
    if options is not None:
        # num_predict: -1 is "no limit", -2 "until the context is full": both
        # are corral's default (the context length bounds every answer).
        if options.num_predict is not None and options.num_predict > 0:
            out["max_tokens"] = options.num_predict
        for name in ("temperature", "top_p", "top_k", "min_p", "seed", "repeat_penalty", "repeat_last_n"):
            value = getattr(options, name)
            if value is not None:
                out[name] = value
        if options.stop is not None:
            out["stop"] = stop_list(options.stop)
        _penalties(out, options.presence_penalty, options.frequency_penalty)
    if fmt == "json":
        out["json_schema"] = json_schema_text(None)
    elif isinstance(fmt, dict):
        out["json_schema"] = json_schema_text(fmt)
    elif fmt not in (None, ""):
        raise BadRequest(f"format: use \"json\" or a JSON schema object, not {fmt!r}")
    return out


def ollama_messages(messages: list[schemas.OllamaMessage]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        if m.images:
            raise BadRequest(f"messages[{i}].images: corral's models take text only")
        if m.role == "tool":
            out.append(tools.past_result(m.content, name=m.tool_name))
        elif m.role == "assistant" and m.tool_calls:
            out.append(tools.past_calls(((c.function.name, c.function.arguments) for c in m.tool_calls), m.content))
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def ollama_tools(specs: list[schemas.ToolSpec] | None) -> tools.Plan:
    """Ollama's ``tools``: the model calls them when it chooses to."""
    functions = [tools.function(f"tools[{i}].function", t.function.name, t.function.description, t.function.parameters) for i, t in enumerate(specs or [])]
    return tools.plan(functions, "auto")

