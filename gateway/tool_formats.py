"""Tool calls in a model's own syntax, for chat templates that render tools.

A GGUF whose Jinja template takes ``tools`` (Qwen 2.5/3, Hermes 2/3,
Llama 3.1+, Mistral) was trained to call tools in one syntax; such a model
is told its tools by its own template (the worker renders it with them) and
its answer is read in that syntax, as llama-server and Ollama do. Each
:class:`Format` knows how calls look, how to read them back, and what to
start the answer with when a call is required: the worker puts that prefix
after the generation prompt and a JSON schema holds the rest to a valid
call, so even a weak model cannot answer a required call with prose.
Templates without tools (SmolLM2) keep the generic form in ``tools.py``.
Pure functions: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

_DECODER = json.JSONDecoder(strict=False)


@dataclass(frozen=True)
class Format:
    name: str
    marker: str  # what starts a call in the model's answer ("" : the answer is a JSON object)
    prefix: Callable[[bool], str]  # (parallel) -> the answer's forced start when a call is required
    schema: Callable[[list[dict[str, Any]], bool], dict[str, Any]]  # (call schemas, parallel) -> what follows it
    read: Callable[[str], tuple[str, list[tuple[str, Any]]]]  # answer -> (text, [(name, arguments)])


def _json_values(text: str) -> list[Any]:
    """The JSON values written one after another in ``text`` (stopping at
    the first thing that is not one)."""
    values, i = [], 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,;":
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            return values
        values.append(value)


def _call(value: Any, arguments_key: str = "arguments") -> tuple[str, Any] | None:
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        args = value.get(arguments_key, value.get("arguments", value.get("parameters", {})))
        if isinstance(args, str):  # some models write the arguments as JSON text
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        return value["name"], args
    return None


# -- Hermes (Qwen, NousResearch Hermes): <tool_call>{json}</tool_call> ----------

_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def _read_hermes(answer: str) -> tuple[str, list[tuple[str, Any]]]:
    start = answer.find("<tool_call>")
    if start < 0:
        return answer, []
    calls = []
    for body in _HERMES.findall(answer[start:]):
        calls += [c for c in map(_call, _json_values(body)) if c]
    return answer[:start].rstrip(), calls


def _one_call(calls: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _call_list(calls: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    array: dict[str, Any] = {"type": "array", "items": _one_call(calls, parallel), "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    return array


HERMES = Format("hermes", "<tool_call>", lambda parallel: "<tool_call>\n", _one_call, _read_hermes)


# -- Mistral: [TOOL_CALLS][{json}, ...] or [TOOL_CALLS]name[ARGS]{json} --------


def _read_mistral(answer: str) -> tuple[str, list[tuple[str, Any]]]:
    start = answer.find("[TOOL_CALLS]")
    if start < 0:
        return answer, []
    calls: list[tuple[str, Any]] = []
    for part in answer[start:].split("[TOOL_CALLS]")[1:]:
        if "[ARGS]" in part:  # the v11 form: a name, then its arguments
            name, _, args = part.partition("[ARGS]")
            values = _json_values(args)
            if name.strip() and values:
                calls.append((name.strip(), values[0]))
            continue
        for value in _json_values(part):
            for item in value if isinstance(value, list) else [value]:
                call = _call(item)
                if call:
                    calls.append(call)
    return answer[:start].rstrip(), calls


MISTRAL = Format("mistral", "[TOOL_CALLS]", lambda parallel: "[TOOL_CALLS]", _call_list, _read_mistral)


# -- Llama 3.1+: {"name": ..., "parameters": {...}} as the whole answer ---------


def _read_llama3(answer: str) -> tuple[str, list[tuple[str, Any]]]:
    body = answer.strip().removeprefix("<|python_tag|>").lstrip()
    if not body.startswith("{"):
        return answer, []
    calls = [c for c in (_call(v, "parameters") for v in _json_values(body)) if c]
    return ("", calls) if calls else (answer, [])


def _llama3_schema(calls: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    # Llama 3's templates ask for "parameters", not "arguments"
    renamed = [{**c, "properties": {"name": c["properties"]["name"], "parameters": c["properties"]["arguments"]},
                "required": ["name", "parameters"]} for c in calls]
    return _one_call(renamed, parallel)


LLAMA3 = Format("llama3", "", lambda parallel: "", _llama3_schema, _read_llama3)

FORMATS = (HERMES, MISTRAL, LLAMA3)


def detect(template: str | None) -> Format | None:
    """The call syntax a chat template teaches, or None when the template
    renders no tools (or in a syntax not known here: the generic form)."""
    if not template or not re.search(r"\btools\b", template):
        return None
    if "<tool_call>" in template:
        return HERMES
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<|start_header_id|>" in template and ("ipython" in template or "<|python_tag|>" in template):
        return LLAMA3
    return None


def hold_back(fmt: Format, buffer: str) -> int:
    """How much of an answer decoded so far can go to the user as text: up
    to where a call starts or may be starting."""
    if not fmt.marker:  # Llama 3: an answer that opens with "{" (or the tag) is a call
        head = buffer.lstrip()
        if not head or head.startswith("{") or "<|python_tag|>".startswith(head[:14]) or head.startswith("<|python_tag|>"):
            return 0
        return len(buffer)
    at = buffer.find(fmt.marker)
    if at >= 0:
        return at
    for keep in range(min(len(fmt.marker) - 1, len(buffer)), 0, -1):
        if fmt.marker.startswith(buffer[-keep:]):
            return len(buffer) - keep
    return len(buffer)
