"""From an HTTP request body to the client library's call: model name,
messages and sampling options. Pure functions: no I/O, no state."""

from __future__ import annotations

import json
import re
from typing import Any

from corral.gateway import schemas
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


def openai_options(req: schemas.Sampling, *, max_tokens: int | None = None, response_format: Any = None) -> dict[str, Any]:
    """Client keyword arguments for an OpenAI request's sampling fields."""
    if req.n not in (None, 1):
        raise BadRequest(f"n: corral returns one choice per request; n must be 1, not {req.n}")
    if req.logprobs:
        raise BadRequest("logprobs: corral does not return log probabilities; leave logprobs unset")
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
    if isinstance(response_format, schemas.ResponseFormatJSONObject):
        options["json_schema"] = json_schema_text(None)
    elif isinstance(response_format, schemas.ResponseFormatJSONSchema):
        options["json_schema"] = json_schema_text(response_format.json_schema.schema)
    return {k: v for k, v in options.items() if v is not None}


def openai_messages(messages: list[schemas.ChatMessage]) -> list[dict[str, str]]:
    """OpenAI messages as corral's: text parts joined, `developer` is a
    system message; images and tools are refused by name."""
    out = []
    for i, m in enumerate(messages):
        if m.role == "tool":
            raise BadRequest(f"messages[{i}].role: corral does not run tools; 'tool' messages are not accepted")
        if isinstance(m.content, list):
            texts = []
            for j, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    raise BadRequest(f"messages[{i}].content[{j}].type: only text parts are accepted, not {part.type!r}")
                texts.append(part.text)
            content = "".join(texts)
        else:
            content = m.content or ""
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


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


def ollama_messages(messages: list[schemas.OllamaMessage]) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(messages):
        if m.images:
            raise BadRequest(f"messages[{i}].images: corral's models take text only")
        if m.role == "tool":
            raise BadRequest(f"messages[{i}].role: corral does not run tools; 'tool' messages are not accepted")
        out.append({"role": m.role, "content": m.content})
    return out

