"""The chat page with the real SmolLM2 model, in a real Chromium: an answer
streams in, Stop leaves a partial answer and frees the worker, the next
message carries the history. (Loading and unloading it from the Models
tab: test_browser_page.py, with this model as its e2e case.)"""

from __future__ import annotations

import pytest
from browser_support import corral_ps, open_page  # noqa: F401  (fixture)
from gateway_fixture import gateway, gateway_factory  # noqa: F401  (fixtures)

from conftest import SMOLLM2, wait_for

pytestmark = pytest.mark.e2e


def saved_messages(page) -> list[dict]:
    """The current conversation as the page keeps it in localStorage."""
    return page.js(
        "const s = JSON.parse(localStorage.getItem('corral.chats.v1'));"
        "return s.chats.find(c => c.id === s.current).messages"
    )


def test_an_answer_streams_in_and_the_next_message_keeps_the_history(gateway, open_page):
    page = open_page(gateway)
    page.pick_model(SMOLLM2)
    page.set_option("temperature", "0")
    page.set_option("max-tokens", "160")
    page.send("Write a poem of eight lines about the sea.")
    lengths: list[int] = []

    def watch() -> bool:
        answering = page.answering()
        answers = page.answers()
        if answering and answers and answers[-1]:
            if not lengths or len(answers[-1]) > lengths[-1]:
                lengths.append(len(answers[-1]))
        return not answering

    wait_for(watch, timeout=180, interval=0.02)
    # seen growing at least twice while the answer was still being written
    assert len(lengths) >= 2 and lengths == sorted(set(lengths)), lengths
    [first] = page.answers()
    assert len(first) >= lengths[-1] > lengths[0] > 0
    stats = page.q("#messages .msg.assistant .stats").text
    assert "tokens/s" in stats and "first token" in stats and "tokens" in stats

    page.send("Now give the poem a title.")
    page.wait_answered(timeout=180)
    assert len(page.answers()) == 2 and page.answers()[1]
    page.shot("two-turns")
    sent = page.chat_requests()[-1]["messages"]
    kept = saved_messages(page)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "Write a poem of eight lines about the sea."
    assert sent[1]["content"] == kept[1]["content"] and sent[1]["content"].strip()
    assert sent[2]["content"] == "Now give the poem a title."
    assert page.chat_requests()[-1]["temperature"] == 0 and page.chat_requests()[-1]["max_tokens"] == 160
    page.assert_only_gateway_requests()


def test_stop_leaves_a_partial_answer_and_the_model_idle(gateway_factory, open_page, corral):
    gateway = gateway_factory(CORRAL_LOG_LEVEL="debug")  # the gateway logs a client that hangs up
    page = open_page(gateway)
    page.pick_model(SMOLLM2)
    page.set_option("max-tokens", "1500")
    page.send("Tell me a very long story about a lighthouse keeper and his cat, with many chapters.")
    wait_for(lambda: page.answering() and page.answers() and len(page.answers()[-1]) > 60, timeout=180)
    assert [row["state"] for row in corral_ps(corral)] == ["busy"]
    page.q("#stop").click()
    wait_for(lambda: not page.answering())
    partial = page.answers()[-1]
    stats = page.q("#messages .msg.assistant .stats").text
    assert len(partial) > 60 and "stopped" in stats
    tokens = int(stats.split(" tokens")[0].lstrip("≈"))
    assert 0 < tokens < 1500
    # the gateway saw the connection close and cancelled the answer at the worker
    wait_for(lambda: "client disconnected mid-stream; cancelling" in gateway.log())
    rows = wait_for(lambda: (rows := corral_ps(corral)) and rows[0]["state"] == "ready" and rows)
    assert rows[0]["queued"] == 0
    assert page.answers()[-1] == partial
    page.reload()
    assert page.answers() == [partial]  # kept as it was when stopped
    assert "stopped" in page.q("#messages .msg.assistant .stats").text
    page.shot("stopped")
