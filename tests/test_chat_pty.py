"""The interactive chat on a real terminal (a pty), as a person uses it.

The echo backend (tokens "tok ", counting a message's words as its prompt
tokens) drives the commands and keys fast; the real SmolLM2 model (e2e)
shows what needs language: a system prompt that changes the answers, a
conversation that outgrows the 2048-token context.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import pexpect
import pytest

from conftest import CORRAL, SMOLLM2, wait_for

pytestmark = pytest.mark.integration

ECHO = "corral/echo"
STATS = re.compile(r"prompt tokens: (\d+), completion tokens: (\d+)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[=>]")
UP = "\x1b[A"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture
def echo(monkeypatch) -> str:
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    return ECHO


def plain(text: str) -> str:
    return ANSI.sub("", text)


def spawn(*args: str, **env: str) -> pexpect.spawn:
    # NO_COLOR: plain text to match (colour has its own test)
    env = {**os.environ, "NO_COLOR": "1", **env}
    child = pexpect.spawn(CORRAL, list(args), encoding="utf-8", timeout=120, env=env, dimensions=(40, 200))
    child.expect_exact("> ")
    return child


def command(child: pexpect.spawn, line: str, expect: str) -> str:
    """Send ``line``, wait for ``expect`` and the next prompt; returns the
    output in between, without terminal escapes."""
    child.sendline(line)
    child.expect_exact(expect)
    seen = child.before + child.after
    child.expect_exact("> ")
    return plain(seen + child.before)


def turn(child: pexpect.spawn, text: str) -> tuple[int, int]:
    """Send a message (the chat runs with --verbose); its token counts."""
    child.sendline(text)
    return answered(child)


def answered(child: pexpect.spawn) -> tuple[int, int]:
    child.expect(STATS)
    counts = int(child.match[1]), int(child.match[2])
    child.expect_exact("> ")
    return counts


def converse(child: pexpect.spawn, messages: list[str]) -> list[str]:
    """Send each message (the chat runs with --verbose); what each turn printed."""
    outputs = []
    for text in messages:
        child.send(text + "\r")
        child.expect(STATS)
        outputs.append(plain(child.before))
        child.expect_exact("> ")
    return outputs


def leave(child: pexpect.spawn) -> None:
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def ps() -> list[dict]:
    return json.loads(subprocess.run([CORRAL, "ps", "--json"], capture_output=True, text=True, check=True).stdout)


# -- commands ------------------------------------------------------------------


def test_set_show_and_unknown_commands(echo):
    child = spawn("run", echo)
    command(child, "/set parameter num_predict 3", "Set parameter num_predict to 3.")
    command(child, "/set verbose", "Stats after each answer: on.")
    assert turn(child, "a b c") == (3, 3)
    out = command(child, "/set parameter seed 99999999999999999999", "Error: seed:")
    assert "range" in out
    command(child, "/set parameter temperature hot", "Error: temperature:")
    command(child, "/set parameter nope 1", "unknown parameter 'nope'")
    command(child, "/set parameter stop END fin", "Set parameter stop to END fin.")
    command(child, "/set parameter stop", "Cleared the stop strings.")
    out = command(child, "/show parameters", "num_predict")
    assert "3" in out
    # any /word is a command, known or not, with or without arguments
    command(child, "/x with spaces", "Unknown command '/x'. Type /? for help")
    command(child, "/nope", "Unknown command '/nope'. Type /? for help")
    # a doubled slash sends the message
    assert turn(child, "//etc/hosts please") == (2, 3)
    help_text = command(child, "/?", "Ctrl-C stops the answer")
    for name in ("/set system", "/set parameter", "/set verbose", "/set quiet", "/show info", "/show parameters",
                 "/load MODEL", "/save NAME", "/load-chat NAME", "/clear", "/bye", "/?", "//TEXT", '"""'):
        assert name in help_text
    info = command(child, "/show info", "Parameters")
    assert re.search(r"Backend\s+echo", info) and re.search(r"Context length\s+2048", info), info
    command(child, "/set system be brief", "Set the system prompt.")
    command(child, "/show system", "be brief")
    command(child, "/set system", "Cleared the system prompt.")
    command(child, "/set quiet", "Stats after each answer: off.")
    command(child, "hello there", "[cut at 3 tokens]")
    leave(child)


def test_save_and_load_chat(echo, corral_home):
    child = spawn("run", echo, "--max-tokens", "2", "--verbose")
    turn(child, "first message")
    turn(child, "second one")
    command(child, "/save talk-1", "Saved the chat as talk-1")
    saved = corral_home / "chats" / "talk-1.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    record = json.loads(saved.read_text())
    assert [m["content"] for m in record["messages"] if m["role"] == "user"] == ["first message", "second one"]
    assert record["options"] == {"max_tokens": 2}

    command(child, "/clear", "Cleared the conversation.")
    command(child, "/load-chat talk-1", "Loaded chat talk-1: 4 messages.")
    # A name is a file name: nothing outside the chats folder, ever.
    command(child, "/save ../escape", "cannot name a chat")
    command(child, "/save .hidden", "cannot name a chat")
    command(child, "/load-chat missing", "no saved chat 'missing'; saved: talk-1")
    (saved.parent / "bad.json").write_text('{"messages": [{"role": "system", "content": 1}]}')
    command(child, "/load-chat bad", "Error: a saved chat needs 'messages'")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["bad.json", "talk-1.json"]
    assert not (corral_home / "escape.json").exists()
    # the chat goes on, with the loaded conversation
    command(child, "/show parameters", "num_predict")
    assert turn(child, "third") == (1, 2)
    leave(child)


# -- keys and input ------------------------------------------------------------


def test_ctrl_c_during_an_answer_stops_it_never_the_chat(echo):
    child = spawn("run", echo, "--max-tokens", "2000000000")
    child.sendline("go on forever")
    child.expect("(tok ){50}")
    # Pressed three times in a row: the answer stops, the chat stays.
    for _ in range(3):
        child.sendcontrol("c")
    child.expect_exact("[stopped]")
    child.expect_exact("> ")
    # The supervisor stopped generating, too.
    wait_for(lambda: [m["state"] for m in ps()] == ["ready"])
    command(child, "/set parameter num_predict 2", "Set parameter num_predict to 2.")
    command(child, "again", "[cut at 2 tokens]")
    leave(child)


def test_ctrl_c_at_the_prompt_prints_the_hint_and_ctrl_d_leaves(echo):
    child = spawn("run", echo)
    child.sendcontrol("c")
    child.expect_exact("Use Ctrl-D or /bye to leave.")
    child.expect_exact("> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_bracketed_paste_is_one_message(echo):
    child = spawn("run", echo, "--max-tokens", "1", "--verbose")
    child.send(f"{PASTE_START}first line here\nsecond line\nthird{PASTE_END}")
    child.send("\r")
    # One turn with all six words, not three turns.
    assert answered(child) == (6, 1)
    assert "prompt tokens" not in child.before
    leave(child)


def test_a_block_ends_at_closing_quotes_or_ctrl_d(echo):
    child = spawn("run", echo, "--max-tokens", "1", "--verbose")
    for line in ('"""', "one two", "three", '"""'):
        child.sendline(line)
    assert answered(child) == (3, 1)
    child.sendline('"""four')
    child.sendline("five six")
    child.sendeof()  # ends the block and sends it; it does not leave
    assert answered(child) == (3, 1)
    leave(child)


def test_history_is_kept_across_sessions(echo, corral_home):
    child = spawn("run", echo, "--max-tokens", "1", "--verbose")
    turn(child, "remember me please")
    leave(child)
    history = corral_home / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "remember me please" in history.read_text()

    child = spawn("run", echo, "--max-tokens", "1", "--verbose")
    child.send(UP + UP + "\r")  # /bye, then the message before it
    assert answered(child) == (3, 1)
    leave(child)

    child = spawn("run", echo, "--max-tokens", "1", "--verbose", CORRAL_NOHISTORY="1")
    turn(child, "secret words here")
    leave(child)
    assert "secret" not in history.read_text()


# -- models and context --------------------------------------------------------


def test_load_switches_model_and_keeps_the_conversation(echo, tiny_catalog):
    child = spawn("run", echo, "--max-tokens", "4", "--verbose")
    turn(child, "a b c")
    turn(child, "d e f")
    command(child, "/load no/such-model", "Error:")
    command(child, f"/load {tiny_catalog['llama']}", f"Switched to {tiny_catalog['llama']}")
    # tiny-llama's chat template counts every message of the request
    with_history, _ = turn(child, "hi")
    command(child, "/clear", "Cleared the conversation.")
    alone, _ = turn(child, "hi")
    assert with_history > alone
    info = command(child, "/show info", "Parameters")
    assert re.search(r"Backend\s+llama\.cpp", info) and re.search(r"Context length\s+256", info), info
    leave(child)


def test_a_conversation_longer_than_the_context_keeps_answering(tiny_catalog):
    """tiny-llama holds 256 tokens: a few turns fill it; every later turn is
    answered, without the oldest turns."""
    child = spawn("run", tiny_catalog["llama"], "--max-tokens", "8", "--verbose", "--temperature", "0")
    outputs = converse(child, [f"please remember that the number of this turn is {i}" for i in range(12)])
    dropped = [i for i, out in enumerate(outputs) if "(older turns dropped to fit the 256-token context)" in out]
    assert dropped, outputs[-1]
    assert not any("Error" in out for out in outputs)
    leave(child)


def test_num_ctx_reloads_the_model_and_says_so(echo):
    child = spawn("run", echo, "--max-tokens", "1")
    out = command(child, "/set parameter num_ctx 512", "now runs with a 512-token context")
    assert "Reloading corral/echo with a 512-token context" in out
    wait_for(lambda: [m["context_length"] for m in ps()] == [512])
    info = command(child, "/show info", "Parameters")
    assert re.search(r"Context length\s+512", info), info
    command(child, "/set parameter num_ctx 8", "Error: num_ctx:")
    leave(child)


def test_a_context_that_cannot_load_leaves_the_chat_as_it_was(tiny_catalog):
    child = spawn("run", tiny_catalog["llama"], "--max-tokens", "2", "--verbose")
    out = command(child, "/set parameter num_ctx 16000000", "Error:")
    assert "memory" in out
    assert "num_ctx" not in command(child, "/show parameters", "num_predict")
    turn(child, "still here")
    info = command(child, "/show info", "Parameters")
    assert re.search(r"Context length\s+256", info), info
    leave(child)


# -- the real model ------------------------------------------------------------


@pytest.mark.e2e
def test_chat_keeps_history_and_bye_exits_0():
    child = spawn("run", SMOLLM2, "--verbose", "--temperature", "0", "--max-tokens", "48")
    p1, c1 = turn(child, "My name is Zed.")
    p2, _ = turn(child, "What is my name?")
    # The second request carries the first turn: both messages and the answer.
    assert p2 > p1 + c1
    command(child, "/clear", "Cleared")
    p3, _ = turn(child, "What is my name?")
    assert p3 < p2
    leave(child)


@pytest.mark.e2e
def test_ctrl_c_stops_a_real_answer_not_the_chat():
    child = spawn("run", SMOLLM2, "--temperature", "0.7", "--verbose")
    child.sendline("Write a very long story about a dragon who learns to bake bread, in ten chapters.")
    wait_for(lambda: [m["state"] for m in ps()] == ["busy"])
    child.sendcontrol("c")
    child.sendcontrol("c")
    child.expect_exact("[stopped]")
    child.expect_exact("> ")
    for line in ('"""', "Say yes.", '"""'):
        child.sendline(line)
    answered(child)
    leave(child)


FRENCH = {"le", "la", "les", "est", "une", "un", "et", "de", "des", "du"}
ENGLISH = {"the", "is", "and", "of", "a", "an", "it", "to"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-zàâçéèêëîïôûùüÿœ]+", text.lower())


@pytest.mark.e2e
def test_set_system_changes_the_answers_style():
    child = spawn("run", SMOLLM2, "--temperature", "0", "--max-tokens", "40")
    before = command(child, "Tell me about the sea.", "[cut at 40 tokens]")
    command(child, "/set system Answer in French only.", "Set the system prompt.")
    command(child, "/clear", "Cleared the conversation. The system prompt stays.")
    after = command(child, "Tell me about the sea.", "[cut at 40 tokens]")
    english, french = _words(before), _words(after)
    assert sum(w in ENGLISH for w in english) > sum(w in FRENCH for w in english), before
    assert sum(w in FRENCH for w in french) > sum(w in ENGLISH for w in french), after
    leave(child)


PARAGRAPH = (
    "Here is a long note about my garden that I would like you to keep in mind. "
    "The garden has tomatoes, beans, peas, carrots, onions and a row of sunflowers along the fence. "
    "Every morning I water the beds, pull the weeds and check the leaves for slugs and aphids. "
) * 2


@pytest.mark.e2e
def test_a_conversation_longer_than_the_context_keeps_answering():
    """Six turns of ~150 tokens in a 768-token context (a third of
    SmolLM2's, so that each prompt costs a third): the fourth no longer
    fits with the others."""
    child = spawn("run", SMOLLM2, "--temperature", "0", "--max-tokens", "32", "--verbose", "--context-length", "768")
    child.timeout = 600  # hang guard: long prompts on a busy 2-core machine
    outputs = converse(child, [f"{PASTE_START}Note {i}. {PARAGRAPH}\nWhat is note {i} about?{PASTE_END}" for i in range(6)])
    dropped = [i for i, out in enumerate(outputs) if "(older turns dropped to fit the 768-token context)" in out]
    assert dropped and dropped[0] < len(outputs) - 1, outputs  # and a turn after it was answered too
    assert not any("Error" in out for out in outputs), outputs
    leave(child)
