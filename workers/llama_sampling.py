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
        return settings["grammar"]
    schema = settings.get("json_schema")
    if not schema:
        return None
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return json_schema_to_gbnf(text)
    except Exception as exc:  # json errors, unsupported schema constructs
        raise ValueError(f"json_schema is not a usable JSON schema ({exc}); send a valid JSON schema") from None


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
