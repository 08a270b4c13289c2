"""What `corral run` takes from its user: every number and text checked
before it reaches the wire (a one-line error, exit 2), invalid UTF-8 read
with replacement characters, piped stdin joined to the prompt, coloured
errors on request."""

from __future__ import annotations

import subprocess

import pytest

from conftest import CORRAL, assert_one_line_error
from corral.client.cli_options import CONTEXT_LENGTH, SAMPLING
from corral.supervisor import protocol

ECHO = "corral/echo"


@pytest.fixture
def echo(monkeypatch) -> str:
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    return ECHO


@pytest.mark.parametrize(
    "option, value",
    [
        ("--seed", "99999999999999999999"),
        ("--seed", "-1"),
        ("--max-tokens", "9999999999999999999999"),
        ("--max-tokens", "0"),
        ("--temperature", "nan"),
        ("--temperature", "1e999"),
        ("--temperature", "-0.5"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--top-k", "-1"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
        ("--context-length", "8"),
        ("--context-length", "99999999999"),
        ("--keep-alive", "soon"),
        ("--keep-alive", "99999999h"),
        ("--stop", ""),
    ],
)
def test_a_bad_number_or_text_is_one_line_and_exit_2(corral, echo, option, value):
    result = corral("run", echo, "hi", option, value)
    assert_one_line_error(result, 2)
    assert option in result.err
    assert result.out == ""


def test_too_many_stop_strings(corral, echo):
    args = [arg for i in range(33) for arg in ("--stop", f"s{i}")]
    result = corral("run", echo, "hi", *args)
    assert_one_line_error(result, 2)
    assert "at most 32 stop strings" in result.err


def test_the_sampling_flags_reach_the_wire(corral, echo):
    result = corral(
        "run", echo, "hi", "--max-tokens", "2", "--top-k", "5", "--min-p", "0.1", "--repeat-penalty", "1.2",
        "--stop", "x", "--stop", "y", "--seed", "4294967295", "--temperature", "0", "--top-p", "1",
    )
    assert result.code == 0, result
    assert result.out == "tok tok \n"


def test_prompt_and_piped_stdin_are_one_prompt(corral, echo):
    # The echo backend counts a message's words as its prompt tokens.
    result = corral("run", echo, "What is the secret word?", "--verbose", "--max-tokens", "1", input="The word is plum.\n")
    assert result.code == 0, result
    assert "prompt tokens: 9," in result.err  # 5 words of PROMPT + 4 of stdin
    # stdin alone is the prompt; an empty stdin leaves PROMPT alone
    assert "prompt tokens: 4," in corral("run", echo, "--verbose", "--max-tokens", "1", input="The word is plum.").err
    assert "prompt tokens: 2," in corral("run", echo, "just this", "--verbose", "--max-tokens", "1", input="").err


def test_invalid_utf8_in_argv_and_stdin_is_replaced(echo):
    # "echo:" makes the echo backend say the message back, word by word.
    argv = subprocess.run([CORRAL, "run", echo, b"echo: caf\xe9 ok"], capture_output=True)
    assert argv.returncode == 0, argv.stderr
    assert argv.stdout.decode() == " caf\ufffd ok\n" and argv.stderr == b""
    stdin = subprocess.run([CORRAL, "run", echo], input=b"echo: bad \xc3\x28 x", capture_output=True)
    assert stdin.returncode == 0, stdin.stderr
    assert stdin.stdout.decode() == " bad \ufffd( x\n" and stdin.stderr == b""


def test_stdin_over_the_limit_is_refused(corral, echo):
    result = corral("run", echo, input="x" * (16 * 1024 * 1024 + 1))
    assert_one_line_error(result, 2)
    assert "stdin holds more than 16 MiB" in result.err


def test_color_colours_errors_only_when_asked(corral):
    coloured = corral("run", "--color", "yes", "no/such-model", "hi")
    assert coloured.code == 3
    assert coloured.err.startswith("\x1b[31m\x1b[1mError:\x1b[0m ")
    plain = corral("run", "--color", "no", "no/such-model", "hi")
    assert plain.code == 3
    assert plain.err.startswith("Error: ") and "\x1b[" not in plain.err
    # a bad option is coloured too: --color is read first
    assert corral("run", "--top-p", "7", "--color", "yes", "x", "hi").err.startswith("\x1b[31m")


def test_every_value_the_cli_takes_the_wire_takes():
    """The CLI's bounds lie within the supervisor's: a request built from
    each bound decodes as the supervisor decodes it."""

    def wire(**fields):
        frame = protocol.request("chat", 1, model="m", messages=[{"role": "user", "content": "hi"}], **fields)
        return protocol.parse_client_request(frame)

    for param in SAMPLING:
        low = param.type.min + (1e-9 if param.type.min_open else 0)
        for value in (low, param.type.max):
            assert getattr(wire(options={param.kwarg: value}).options, param.kwarg) == value
    for value in (CONTEXT_LENGTH.type.min, CONTEXT_LENGTH.type.max):
        assert wire(context_length=value).context_length == value
