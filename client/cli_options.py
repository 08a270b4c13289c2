"""The options the commands share (--color, --debug, --json, sampling), the
state they set, and the checks that keep every number and text a user types
inside what the wire accepts.

A bad value is a one-line error and exit code 2 here, before it reaches the
client library: a seed of 10**20 would otherwise surface as msgpack's
OverflowError. The interactive chat's ``/set parameter`` checks its values
with the same types, so a bound is written once.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from corral.client import render
from corral.client.api import Client
from corral.configs.settings import load_settings, parse_duration
from corral.supervisor.errors import CorralError, UsageError
from corral.supervisor.logs import configure_logging
from corral.supervisor.protocol import MAX_STOP_STRINGS, MAX_TEXT_CHARS

# A stop string's length on the wire (protocol.Options.stop).
MAX_STOP_CHARS = 1024
# llama.cpp's samplers take a 32-bit seed.
MAX_SEED = 2**32 - 1
# A keep-alive past this is "forever": say -1.
MAX_KEEP_ALIVE_S = 366 * 24 * 3600


class Number(click.FloatRange):
    """A bounded float that is a number: NaN passes every range check."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class Context:
    """Per-invocation state shared by the commands."""

    def __init__(self) -> None:
        self.color: bool | None = None
        self.debug = False

    def styled(self, text: str, **style: Any) -> str:
        return click.style(text, **style) if self.color else text

    def client(self, autostart: bool = True, preload: dict | None = None) -> Client:
        return Client(load_settings(), autostart=autostart, preload=preload)

    def request_extra(self) -> dict[str, Any]:
        """With --debug: the supervisor's log lines about each request, dim on stderr."""
        return {"debug": True, "on_log": self.print_log} if self.debug else {}

    def print_log(self, line: str) -> None:
        render.echo_dim(line.rstrip("\n"), self.styled, err=True)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def _set_debug(ctx: click.Context, _param: Any, value: bool) -> bool:
    if value:
        ctx.ensure_object(Context).debug = True
        configure_logging(logging.DEBUG, sys.stderr, process="cli")
    return value


def _set_color(ctx: click.Context, _param: Any, value: str) -> str:
    obj = ctx.ensure_object(Context)
    obj.color = {"yes": True, "no": False}.get(value, sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help="Show debug logs on stderr, and the supervisor's log lines about this command's requests.",
)
color_option = click.option(
    "--color",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    expose_value=False,
    is_eager=True,  # before other options: their errors are coloured too
    callback=_set_color,
    help="Colour hints and errors: auto (when stdout is a terminal and NO_COLOR is unset), yes or no.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@dataclass(frozen=True)
class Parameter:
    """A number the user can set: ``--NAME`` on the command line and
    ``/set parameter OLLAMA_NAME`` in the chat."""

    kwarg: str  # the client library's keyword
    ollama: str  # Ollama's name, for /set parameter
    type: click.ParamType
    help: str
    reloads: bool = False  # a load-time setting: a new value reloads the model

    @property
    def flag(self) -> str:
        return "--" + self.kwarg.replace("_", "-")

    def convert(self, text: str) -> Any:
        """The value of ``text``, or :class:`UsageError` saying the bounds."""
        try:
            return self.type.convert(text, None, None)
        except click.BadParameter as exc:
            raise UsageError(f"{self.ollama}: {exc.format_message()}") from None


# The ranges lie within the wire's (protocol.Options; a test checks that).
SAMPLING = (
    Parameter("temperature", "temperature", Number(0, 100), "Sampling temperature; 0 always picks the likeliest token."),
    Parameter("top_p", "top_p", Number(0, 1, min_open=True), "Nucleus sampling: keep the likeliest tokens up to this probability mass."),
    Parameter("top_k", "top_k", click.IntRange(0, 1_000_000), "Keep only the K likeliest tokens (0: all of them)."),
    Parameter("min_p", "min_p", Number(0, 1), "Drop tokens less likely than P times the likeliest one."),
    Parameter("repeat_penalty", "repeat_penalty", Number(0, 100, min_open=True), "Penalise tokens already in the answer (1: no penalty)."),
    Parameter("seed", "seed", click.IntRange(0, MAX_SEED), "Random seed: the same seed and prompt give the same answer."),
    Parameter("max_tokens", "num_predict", click.IntRange(1, 2**31 - 1), "Stop after this many tokens."),
)
CONTEXT_LENGTH = Parameter(
    "context_length", "num_ctx", click.IntRange(16, 16 * 1024 * 1024),
    "The model's context length in tokens; a new value reloads the model.", reloads=True,
)
PARAMETERS = {p.ollama: p for p in (*SAMPLING, CONTEXT_LENGTH)}

# What a request names besides the model: not sampling, it may reload.
MODEL_KWARGS = ("keep_alive", "ignore_memory_check", "model_type", "context_length")


def clean_text(text: str) -> str:
    """Text from argv or a file as valid UTF-8: bytes that are not (Python
    keeps them as lone surrogates) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def checked_text(text: str, what: str) -> str:
    text = clean_text(text)
    if len(text) > MAX_TEXT_CHARS:
        raise UsageError(f"{what} is {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    return text


def read_stdin() -> str:
    """All of stdin as text, invalid UTF-8 replaced, within the text limit."""
    data = sys.stdin.buffer.read(MAX_TEXT_CHARS * 4 + 1)
    if len(data) > MAX_TEXT_CHARS * 4:
        raise UsageError(f"stdin holds more than {MAX_TEXT_CHARS * 4 // 2**20} MiB; pass a shorter prompt")
    return checked_text(data.decode("utf-8", "replace"), "the prompt on stdin")


def check_stops(values: tuple[str, ...] | list[str]) -> list[str]:
    stops = [clean_text(s) for s in values]
    if len(stops) > MAX_STOP_STRINGS:
        raise UsageError(f"at most {MAX_STOP_STRINGS} stop strings, not {len(stops)}")
    for s in stops:
        if not s or len(s) > MAX_STOP_CHARS:
            raise UsageError(f"a stop string must have 1 to {MAX_STOP_CHARS} characters")
    return stops


def check_keep_alive(text: str | None) -> str | None:
    if text is None:
        return None
    seconds = parse_duration(clean_text(text), "keep-alive")
    if seconds is not None and (not math.isfinite(seconds) or seconds > MAX_KEEP_ALIVE_S):
        raise UsageError(f"keep-alive {text!r} is too long; use -1 to keep the model loaded forever")
    return text


def _checked(check: Callable[[Any], Any]) -> Callable:
    """A click callback running ``check``: its UsageError becomes click's
    bad-parameter error (one line, exit 2)."""

    def callback(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return check(value)
        except CorralError as exc:
            raise click.BadParameter(exc.message, param=param) from None

    return callback


def _text(what: str) -> Callable:
    return _checked(lambda v: None if v is None else checked_text(v, what))


def _options(options: list[Callable]) -> Callable[[Callable], Callable]:
    return lambda f: functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def _parameter_option(p: Parameter) -> Callable:
    return click.option(p.flag, p.kwarg, type=p.type, help=p.help)


# Sampling and model options of run, chat and batch.
sampling_options = _options(
    [
        *(_parameter_option(p) for p in SAMPLING),
        click.option("--stop", multiple=True, callback=_checked(check_stops), help="Stop the answer at this text (repeatable)."),
        click.option("--system", callback=_text("the system prompt"), help="A system prompt for the conversation."),
        click.option("--keep-alive", callback=_checked(check_keep_alive),
                     help="Keep the model loaded this long after the answer (5m, 0, -1 = forever)."),
        click.option("--ignore-runtime-memory-check", is_flag=True, help="Load the model even if it may not fit."),
        click.option("--model-type", callback=_text("--model-type"),
                     help="The architecture of a GGML file given as a path (gpt2, gptj, mpt, ...)."),
        click.option("--verbose", is_flag=True, help="Print token counts and speed after each answer."),
    ]
)
context_option = _parameter_option(CONTEXT_LENGTH)


def model_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """The client keywords that choose how the model is loaded."""
    kwargs = {
        "keep_alive": opts.get("keep_alive"),
        "ignore_memory_check": bool(opts.get("ignore_runtime_memory_check")),
        "model_type": opts.get("model_type"),
    }
    # Sent only when given: a client without the field still works.
    if opts.get("context_length") is not None:
        kwargs["context_length"] = opts["context_length"]
    return kwargs


def sampling_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """The sampling options the user gave (unset ones: the model's defaults)."""
    kwargs = {p.kwarg: opts[p.kwarg] for p in SAMPLING if opts.get(p.kwarg) is not None}
    if opts.get("stop"):
        kwargs["stop"] = list(opts["stop"])
    return kwargs
