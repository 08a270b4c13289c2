"""Sampling for the llama.cpp backend: a model's own defaults, and one
llama.cpp sampler chain per sequence.

What a request leaves unset comes from the model file's
``general.sampling.*`` keys where it has them, else from llama.cpp's own
defaults, with a repeat penalty of 1.1 over the last 64 tokens (as Ollama
does: small models loop without one). The policy is the pure function
:func:`resolve_sampling`; :func:`build_sampler` only turns its answer into
native samplers.
"""

from __future__ import annotations

import json
import random
import re
import sys
from typing import Any, Mapping

from corral.workers.backend import SAMPLING_DEFAULTS

# Sampling field -> (GGUF key, type): the keys llama.cpp defines for a
# model's recommended sampling (llama-arch.cpp, LLM_KV_GENERAL_SAMPLING_*).
GGUF_SAMPLING_KEYS: dict[str, tuple[str, type]] = {
    "temperature": ("general.sampling.temp", float),
    "top_k": ("general.sampling.top_k", int),
    "top_p": ("general.sampling.top_p", float),
    "min_p": ("general.sampling.min_p", float),
    "repeat_penalty": ("general.sampling.penalty_repeat", float),
    "repeat_last_n": ("general.sampling.penalty_last_n", int),
}

# Everything a sampler chain is built from.
FIELDS = (*SAMPLING_DEFAULTS, "seed", "grammar", "json_schema")


def model_sampling_defaults(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The model's sampling defaults: its GGUF ``general.sampling.*`` keys
    where present and well-formed, llama.cpp's (with Ollama's repeat
    penalty) for the rest."""
    defaults = dict(SAMPLING_DEFAULTS)
    for name, (key, kind) in GGUF_SAMPLING_KEYS.items():
        raw = metadata.get(key)
        if raw is None:
            continue
        try:
            defaults[name] = kind(float(raw)) if kind is int else kind(raw)
        except ValueError:
            continue  # a malformed key in a file is not the user's fault
    return defaults


def resolve_sampling(sampling: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings one sequence samples with: the request's where it set
    them (None = unset), else the model's defaults. ``top_k`` 0 means off."""
    chosen = {}
    for name in FIELDS:
        value = getattr(sampling, name, None)
        chosen[name] = defaults.get(name) if value is None else value
    return chosen


def grammar_text(settings: Mapping[str, Any]) -> str | None:
    """GBNF for the request: its own grammar, or its JSON schema converted
    with llama-cpp-python's converter. A bad schema is the caller's error."""
    if settings.get("grammar"):
        return check_gbnf(settings["grammar"])
    schema = settings.get("json_schema")
    if not schema:
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        text = json.dumps(_any_items(json.loads(schema) if isinstance(schema, str) else schema))
        return check_gbnf(json_schema_to_gbnf(text))
    except Exception as exc:  # json errors, unsupported schema constructs
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ValueError(f"a JSON schema (json_schema, response_format or a tool's parameters) cannot be used: {reason}; "
                         "send a valid JSON schema") from None


def _any_items(schema: Any) -> Any:
    """``"items": {}`` (an array of anything) as the converter can take it:
    it reads an empty ``items`` as missing and then fails on
    ``prefixItems``."""
    if isinstance(schema, dict):
        return {k: _any_items(v) for k, v in schema.items() if not (k == "items" and v == {})}
    if isinstance(schema, list):
        return [_any_items(v) for v in schema]
    return schema


# A repetition {m,n} is expanded into that many rules: bounded, so that a
# request cannot make a worker build millions of them.
MAX_REPEAT = 10_000
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
_REPEAT = re.compile(r"\{\s*(\d*)\s*(,?)\s*(\d*)\s*\}")


def check_gbnf(text: str) -> str:
    """``text`` if llama.cpp can run it safely. Its parser takes two things
    it cannot run: a character range that runs backwards (``[z-a]``: the
    sampler aborts the worker on the first token) and a repetition whose
    minimum is past its maximum (``{5,2}``: the expansion runs away with
    the memory). Both are refused here, with a bound on repetitions."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":  # a comment, to the end of the line
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c == '"':  # a literal: skip it, escapes and all
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "[":
            i = _check_class(text, i + 1)
        elif c == "{":
            match = _REPEAT.match(text, i)
            if match:
                low, comma, high = match.groups()
                m = int(low or 0)
                hi = m if not comma else (int(high) if high else None)
                if hi is not None and m > hi:
                    raise ValueError(f"grammar: the repetition {match.group(0)} asks for at least {m} but at most {hi}; write {{{hi},{m}}}")
                if max(m, hi or 0) > MAX_REPEAT:
                    raise ValueError(f"grammar: the repetition {match.group(0)} is past the limit of {MAX_REPEAT}; use * or + for long runs")
                i = match.end() - 1
        i += 1
    return text


def _char(text: str, i: int) -> tuple[int, int]:
    """The code point of the (possibly escaped) character at ``i``, and the index after it."""
    if text[i] == "\\":
        match = _ESCAPE.match(text, i)
        if match is None:
            return ord("\\"), i + 1
        body = match.group(1)
        if body[0] in "xuU" and len(body) > 1:
            return int(body[1:], 16), match.end()
        return ord({"n": "\n", "r": "\r", "t": "\t"}.get(body, body)), match.end()
    return ord(text[i]), i + 1


def _shown(code: int) -> str:
    return chr(code) if chr(code).isprintable() and code < 0x10000 else f"U+{code:04X}"


def _check_class(text: str, i: int) -> int:
    """Check a character class from just after its ``[``; the index of its ``]``."""
    n = len(text)
    if i < n and text[i] == "^":
        i += 1
    while i < n and text[i] != "]":
        low, i = _char(text, i)
        if i + 1 < n and text[i] == "-" and text[i + 1] != "]":
            high, i = _char(text, i + 1)
            if low > high:
                raise ValueError(f"grammar: the character range {_shown(low)}-{_shown(high)} runs backwards; write it low to high")
    return i


def build_sampler(settings: Mapping[str, Any], vocab: Any, n_vocab: int) -> Any:
    """A native sampler chain (llama_sampler_p) for ``settings``, in
    llama.cpp's own order: grammar, penalties, top-k, top-p, min-p,
    temperature, then the draw. The caller frees it (llama_sampler_free)."""
    import llama_cpp as L

    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        L.llama_sampler_chain_add(chain, sampler)

    gbnf = grammar_text(settings)
    if gbnf:
        grammar = L.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not grammar:
            L.llama_sampler_free(chain)
            reason = grammar_error(lambda: L.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root"))
            raise ValueError(f"grammar: {reason}; fix the grammar")
        add(grammar)
    penalties = (settings["repeat_penalty"], settings["frequency_penalty"], settings["presence_penalty"])
    if settings["repeat_last_n"] != 0 and penalties != (1.0, 0.0, 0.0):
        add(L.llama_sampler_init_penalties(n_vocab, settings["repeat_last_n"], *penalties))
    if settings["temperature"] <= 0:
        add(L.llama_sampler_init_greedy())
        return chain
    if settings["top_k"] and settings["top_k"] > 0:
        add(L.llama_sampler_init_top_k(settings["top_k"]))
    if settings["top_p"] < 1.0:
        add(L.llama_sampler_init_top_p(settings["top_p"], 1))
    if settings["min_p"] > 0.0:
        add(L.llama_sampler_init_min_p(settings["min_p"], 1))
    add(L.llama_sampler_init_temp(settings["temperature"]))
    seed = settings["seed"]
    add(L.llama_sampler_init_dist((seed if seed is not None else random.getrandbits(32)) & 0xFFFFFFFF))
    return chain



def grammar_error(parse: Any) -> str:
    """Why ``parse()`` (a grammar sampler's init) failed, in llama.cpp's own
    words ("Undefined rule identifier 'foo'", "left recursion detected ...").
    llama.cpp writes the reason to stderr, some of it only at a log level
    llama-cpp-python drops, so the parse is run once more with its log on
    and the process's stderr sent to a file; the rest of what was written
    meanwhile goes on to the worker's log."""
    import os
    import tempfile

    from llama_cpp._logger import set_verbose

    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        set_verbose(True)
        try:
            sampler = parse()
        finally:
            set_verbose(False)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if sampler:
            import llama_cpp as L

            L.llama_sampler_free(sampler)
        caught.seek(0)
        text = caught.read(64 * 1024).decode("utf-8", "replace")
    sys.stderr.write(text)
    return grammar_reason(text)


def grammar_reason(text: str) -> str:
    """The one line of llama.cpp's output that says what is wrong."""
    _, found, reason = text.partition("error parsing grammar: ")
    if found:
        return " ".join(reason.split("\n\n")[0].split())[:300]
    for line in text.splitlines():
        if "grammar" in line and "failed to parse" not in line and line.strip():
            return " ".join(line.split())[:300]
    return "it does not parse as GBNF with a 'root' rule"
