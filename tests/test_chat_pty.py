"""The interactive chat on a real terminal (a pty), as a person uses it."""

from __future__ import annotations

import os
import re
import time

import pexpect

from conftest import CORRAL, SMOLLM2

STATS = re.compile(r"prompt tokens: (\d+), completion tokens: (\d+)")


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(CORRAL, list(args), encoding="utf-8", timeout=120, env=dict(os.environ), dimensions=(40, 200))


def turn(child: pexpect.spawn, text: str) -> tuple[int, int]:
    child.sendline(text)
    child.expect(STATS)
    prompt_tokens, completion_tokens = int(child.match[1]), int(child.match[2])
    child.expect_exact("> ")
    return prompt_tokens, completion_tokens


def test_chat_keeps_history_and_bye_exits_0():
    child = spawn("run", SMOLLM2, "--verbose", "--temperature", "0", "--max-tokens", "48")
    child.expect_exact("> ")
    p1, c1 = turn(child, "My name is Zed.")
    p2, _ = turn(child, "What is my name?")
    # The second request carries the first turn: both messages and the answer.
    assert p2 > p1 + c1
    child.sendline("/clear")
    child.expect_exact("Cleared")
    child.expect_exact("> ")
    p3, _ = turn(child, "What is my name?")
    assert p3 < p2
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_not_the_chat():
    child = spawn("run", SMOLLM2, "--temperature", "0.7")
    child.expect_exact("> ")
    child.sendline("Write a very long story about a dragon who learns to bake bread, in ten chapters.")
    child.expect_exact("chapters.\r\n")  # the terminal's echo of the line
    child.expect(r"\w+ \w+ \w+ \w+")  # the answer is streaming
    pressed = time.monotonic()
    child.sendcontrol("c")
    child.expect_exact("[stopped]", timeout=10)
    child.expect_exact("> ", timeout=10)
    assert time.monotonic() - pressed < 2.5
    # Still chatting: the next message gets an answer.
    child.sendline('"""')
    child.sendline("Say yes.")
    child.sendline('"""')
    child.expect(r"\w+")
    child.expect_exact("> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_help_and_unknown_command():
    child = spawn("run", SMOLLM2)
    child.expect_exact("> ")
    child.sendline("/?")
    child.expect_exact("/bye")
    child.expect_exact("> ")
    child.sendline("/nope")
    child.expect_exact("Unknown command")
    child.expect_exact("> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
