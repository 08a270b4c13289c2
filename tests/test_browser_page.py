"""The chat page in a real Chromium, against a real gateway and the echo
backend (fast): it loads clean under its CSP, shows model output as text,
keeps conversations across reloads, fits a 375 px screen, works from the
keyboard, manages models from the Models tab, and shows each error inline
with the chat going on after it. Every page talks to the gateway only."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest
from browser_support import corral_ps, open_page  # noqa: F401  (fixture)
from gateway_fixture import ECHO, gateway, gateway_factory, ps_rows  # noqa: F401  (fixtures)
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from conftest import SMOLLM2, wait_for

pytestmark = pytest.mark.integration

INJECTION = "<img src=x onerror=alert(1)> <script>alert(2)</script>"


def test_the_page_loads_clean_under_its_content_security_policy(gateway, open_page):
    page = open_page(gateway, path="/")  # a browser asking for / gets the page
    assert page.driver.current_url.startswith(gateway.url + "/ui/")
    assert page.driver.title == "corral"
    assert {o.get_attribute("value") for o in page.qq("#model option")} >= {ECHO, "ai/smollm2"}
    page.show_models()
    page.shot("loaded")
    assert page.console_errors() == []
    with gateway.client() as http:
        served = http.get("/ui/")
        assert served.status_code == 200
        policy = served.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "'unsafe-inline'" not in policy and "http" not in policy
        assert http.get("/ui").headers["location"].endswith("/ui/")
        # API clients asking for / still get the plain answer
        assert http.get("/").text == "corral is running\n"
    # the policy holds in the browser: an inline script never runs, and no
    # string can become HTML (Trusted Types)
    refused = page.js(
        "try { const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.append(s); }"
        " catch (e) { return e.name } return window.ran === undefined ? 'not run' : 'ran'"
    )
    assert refused in ("TypeError", "not run")
    assert page.js("try { document.body.insertAdjacentHTML('beforeend', '<b>x</b>'); return 'allowed' } catch (e) { return e.name }") == "TypeError"
    page.assert_only_gateway_requests()


def test_html_in_an_answer_shows_as_text_and_runs_nothing(gateway, open_page):
    page = open_page(gateway)
    page.pick_model(ECHO)
    page.send("echo:" + INJECTION)
    wait_for(lambda: page.answers() and not page.answering())
    page.shot("injection")
    assert page.answers() == [INJECTION]
    assert page.q("#messages .msg.assistant .body").text == INJECTION
    assert page.qq("img") == [] and page.qq("#messages script") == []
    try:
        alert = page.driver.switch_to.alert.text
    except NoAlertPresentException:
        alert = None
    assert alert is None
    page.assert_only_gateway_requests()


def test_markdown_renders_lists_and_code_blocks_with_a_copy_button(gateway, open_page):
    page = open_page(gateway)
    page.pick_model(ECHO)
    text = "echo:Steps:\n\n- one\n- **two**\n\n```python\nprint('<b>hi</b>')\n```"
    # Shift+Enter starts a new line (WebDriver holds a modifier until sent again)
    page.q("#input").send_keys(text.replace("\n", Keys.SHIFT + Keys.ENTER + Keys.SHIFT) + Keys.ENTER)
    page.wait_answered()
    wait_for(lambda: page.qq("#messages .msg.assistant .code"))
    page.shot("markdown")
    assert page.texts("#messages .msg.assistant p") == ["Steps:"]
    assert page.texts("#messages .msg.assistant li") == ["one", "two"]
    assert page.texts("#messages .msg.assistant li strong") == ["two"]
    assert page.texts("#messages .msg.assistant pre code") == ["print('<b>hi</b>')"]
    assert page.qq("#messages .msg.assistant pre b") == []
    assert page.q("#messages .msg.assistant .code button").text == "Copy"


MARKDOWN_CASES = [
    ("a\nb\n\nc", "<p>a\nb</p><p>c</p>"),
    ("# Title\ntext", "<h3>Title</h3><p>text</p>"),
    ("- a\n- b\n  - c\n- d", "<ul><li>a</li><li>b<ul><li>c</li></ul></li><li>d</li></ul>"),
    ("3. x\n4. y", '<ol start="3"><li>x</li><li>y</li></ol>'),
    ("> quoted **bold**", "<blockquote><p>quoted <strong>bold</strong></p></blockquote>"),
    ("`a*b*c` and snake_case_name and *it*", "<p><code>a*b*c</code> and snake_case_name and <em>it</em></p>"),
    ("2 * 3 * 4 and **open", "<p>2 * 3 * 4 and **open</p>"),
    ("---", "<hr>"),
    (INJECTION, "<p>&lt;img src=x onerror=alert(1)&gt; &lt;script&gt;alert(2)&lt;/script&gt;</p>"),
    ("[link](javascript:alert(1))", "<p>[link](javascript:alert(1))</p>"),
]


def test_markdown_makes_these_elements_and_no_others(gateway, open_page):
    page = open_page(gateway)
    rendered = page.driver.execute_async_script(
        "const [cases, done] = arguments;"
        "import('./markdown.js').then(({ renderMarkdown }) => done(cases.map(([text]) => {"
        "  const box = document.createElement('div'); box.append(renderMarkdown(text, () => {})); return box.innerHTML; })))",
        MARKDOWN_CASES,
    )
    assert rendered == [html for _, html in MARKDOWN_CASES]
    # a code block keeps its text as typed; one still streaming has no closing fence yet
    blocks = page.driver.execute_async_script(
        "const done = arguments[0];"
        "import('./markdown.js').then(({ renderMarkdown }) => done(['```js\\nlet a = \\'<b>\\';\\n```\\nafter', '```\\nnot closed'].map((text) => {"
        "  const box = document.createElement('div'); box.append(renderMarkdown(text, () => {}));"
        "  return [box.querySelector('.lang').textContent, box.querySelector('pre code').textContent, [...box.children].map((e) => e.className || e.tagName)]; })))"
    )
    assert blocks == [["js", "let a = '<b>';", ["code", "P"]], ["", "not closed", ["code"]]]


def test_a_reload_keeps_the_conversation(gateway, open_page):
    page = open_page(gateway)
    page.pick_model(ECHO)
    page.send("echo:first answer")
    wait_for(lambda: page.answers() == ["first answer"] and not page.answering())
    page.send("echo:second answer")
    wait_for(lambda: page.answers() == ["first answer", "second answer"] and not page.answering())
    page.reload()
    assert page.answers() == ["first answer", "second answer"]
    assert page.texts("#messages .msg.user .body") == ["echo:first answer", "echo:second answer"]
    assert page.q("#model").get_attribute("value") == ECHO
    assert page.texts("#chat-list .open") == ["echo:first answer"]
    page.shot("reloaded")
    # a new chat starts empty; the old one is still listed and opens again
    page.q("#new-chat").click()
    assert page.answers() == []
    page.qq("#chat-list .open")[1].click()
    assert page.answers() == ["first answer", "second answer"]


def test_at_375_px_the_input_and_the_answer_fit_without_horizontal_scrolling(gateway, open_page):
    page = open_page(gateway, size=(375, 740))
    assert page.js("return window.innerWidth") == 375
    page.pick_model(ECHO)
    long_word = "x" * 300
    page.send(f"echo:{long_word} and a sentence long enough to wrap over several lines on a phone screen")
    wait_for(lambda: page.answers() and not page.answering())
    page.shot("narrow")
    for css in ("#input", "#send", "#messages .msg.assistant .body", "#model"):
        element = page.q(css)
        assert element.is_displayed(), css
        box = page.js("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.top, r.bottom]", element)
        assert box[0] >= 0 and box[1] <= 375, (css, box)
        assert box[2] >= 0 and box[3] <= 740, (css, box)
    assert page.js("return document.documentElement.scrollWidth") <= 375
    # the list of chats folds away on a phone, and folds back once one is picked
    assert not page.q("#chats").is_displayed()
    page.q("#toggle-chats").click()
    assert page.q("#chats").is_displayed() and page.q("#input").is_displayed()
    page.shot("narrow-chats")
    page.q("#chat-list .open").click()
    assert not page.q("#chats").is_displayed()
    page.show_models()
    assert page.js("return document.documentElement.scrollWidth") <= 375


def test_keyboard_alone_loads_a_model_and_chats_with_it(gateway, open_page, corral):
    page = open_page(gateway)

    def press(*key: str) -> None:
        ActionChains(page.driver).send_keys(*key).perform()

    def focused(attribute: str) -> str | None:
        return page.driver.switch_to.active_element.get_attribute(attribute)

    page.q("#tab-chat").send_keys(Keys.ARROW_RIGHT)  # the tab pattern: arrows move between tabs
    assert focused("id") == "tab-models" and page.q("#view-models").is_displayed()
    wait_for(lambda: page.qq(f'#model-list li[data-model="{ECHO}"]'))
    for _ in range(30):
        press(Keys.TAB)
        if focused("aria-label") == f"Load {ECHO}":
            break
    assert focused("aria-label") == f"Load {ECHO}"
    press(Keys.ENTER)
    wait_for(lambda: page.model_state(ECHO) == "ready")
    assert [row["model"] for row in corral_ps(corral)] == [ECHO]
    assert focused("aria-label") == f"Load {ECHO}"  # the refresh kept the focus
    press(Keys.TAB, Keys.TAB)
    assert focused("aria-label") == f"Chat {ECHO}"
    press(Keys.ENTER)
    assert focused("id") == "input" and page.q("#model").get_attribute("value") == ECHO
    press("echo:one")
    ActionChains(page.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    press("two")  # Shift+Enter made a new line, and sent nothing
    assert page.q("#input").get_attribute("value") == "echo:one\ntwo"
    press(Keys.ENTER)
    wait_for(lambda: page.answers() == ["one\ntwo"] and not page.answering())
    page.shot("keyboard")


def test_escape_stops_an_answer_and_frees_the_worker(gateway, open_page, corral):
    page = open_page(gateway)
    page.pick_model(ECHO)
    page.set_option("max-tokens", "1000000")
    page.send("go on and on")
    wait_for(lambda: page.answering() and page.answers() and page.answers()[0].startswith("tok"))
    ActionChains(page.driver).send_keys(Keys.ESCAPE).perform()
    wait_for(lambda: not page.answering())
    assert page.answers()[0].startswith("tok tok")
    assert page.q("#messages .msg.assistant .stats").text.endswith("stopped")
    assert page.driver.switch_to.active_element.get_attribute("id") == "input"
    wait_for(lambda: [row["state"] for row in corral_ps(corral)] == ["ready"])


@pytest.mark.parametrize("model", [ECHO, pytest.param(SMOLLM2, marks=pytest.mark.e2e)])
def test_load_and_unload_from_the_models_tab(gateway, open_page, corral, model):
    page = open_page(gateway)
    page.show_models()
    row = page.model_row(model)
    assert page.model_state(model) == "not loaded"
    page.watch_states(model)
    row.find_element(By.CSS_SELECTOR, f'[aria-label="Load {model}"]').click()
    wait_for(lambda: page.model_state(model) == "ready", timeout=180)
    assert page.seen_states() == ["not loaded", "loading", "ready"]
    [loaded] = corral_ps(corral)
    assert loaded["model"] == model and loaded["state"] == "ready"
    wait_for(lambda: "estimate" in row.find_element(By.CSS_SELECTOR, ".memory").text)
    assert row.find_element(By.CSS_SELECTOR, ".context").text == f"{loaded['context_length']} tokens"
    assert row.find_element(By.CSS_SELECTOR, ".unloads").text.startswith("in ")
    page.shot("loaded")
    row.find_element(By.CSS_SELECTOR, f'[aria-label="Unload {model}"]').click()
    wait_for(lambda: page.model_state(model) == "not loaded")
    assert corral_ps(corral) == []
    page.assert_only_gateway_requests()


def test_the_models_tab_follows_what_other_clients_load_and_unload(gateway, open_page, corral):
    page = open_page(gateway)
    page.show_models()
    assert corral("run", "-d", ECHO).code == 0
    wait_for(lambda: page.model_state(ECHO) == "ready")  # nobody clicked: it polls
    assert corral("unload", ECHO).code == 0
    wait_for(lambda: page.model_state(ECHO) == "not loaded")


def test_not_enough_memory_shows_need_and_have_and_the_chat_goes_on(gateway_factory, open_page):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_MEMORY_BUDGET="100MiB")
    page = open_page(gw)
    page.pick_model("ai/smollm2")  # about 357 MiB: refused before it loads
    page.send("Hi")
    wait_for(lambda: page.errors())
    [error] = page.errors()
    assert error.startswith("Not enough memory") and "needs about" in error and "100 MiB available" in error
    page.pick_model(ECHO)
    page.send("echo:still here")
    wait_for(lambda: page.answers() == ["still here"] and not page.answering())
    page.shot("memory-error")
    # the browser logs the failed request (507), and nothing else went wrong
    assert all("507" in e["message"] for e in page.console_errors())


def test_a_crashed_worker_shows_its_signal_and_the_chat_goes_on(gateway, open_page):
    page = open_page(gateway)
    page.pick_model(ECHO)
    page.set_option("max-tokens", "1000000")
    page.send("go on and on")
    wait_for(lambda: page.answering() and page.answers() and page.answers()[0].startswith("tok"))
    os.kill(next(row["pid"] for row in ps_rows(gateway.home)), signal.SIGKILL)
    wait_for(lambda: page.errors() and not page.answering())
    [error] = page.errors()
    assert error.startswith("The model's worker crashed") and "SIGKILL" in error
    assert page.answers()[0].startswith("tok tok")  # the partial answer stays
    assert "cut by an error" in page.q("#messages .msg.assistant .stats").text
    page.set_option("max-tokens", "")
    page.send("echo:after the crash")
    wait_for(lambda: len(page.answers()) == 2 and not page.answering())
    assert page.answers()[1] == "after the crash"
    page.shot("crash")


def test_a_busy_model_says_so_and_the_chat_goes_on(gateway_factory, open_page):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_MAX_QUEUE="1", CORRAL_HEARTBEAT_LIVENESS="600")
    one = {"model": ECHO, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with gw.client() as http:
        http.post("/v1/chat/completions", json=one)
    [row] = ps_rows(gw.home)
    page = open_page(gw)
    page.pick_model(ECHO)
    # A stopped worker holds what it was given: its slots fill, then the queue.
    os.kill(row["pid"], signal.SIGSTOP)
    waiting = [threading.Thread(target=lambda: httpx.post(gw.url + "/v1/chat/completions", json=one, timeout=120)) for _ in range((row.get("parallel") or 1) + 1)]
    try:
        for t in waiting:
            t.start()
        wait_for(lambda: ps_rows(gw.home)[0]["queued"] == 1)
        page.send("echo:are you there")
        wait_for(lambda: page.errors())
    finally:
        os.kill(row["pid"], signal.SIGCONT)
    for t in waiting:
        t.join(timeout=120)
    [error] = page.errors()
    assert error.startswith("The model is busy") and "Try again in" in error
    page.send("echo:now?")
    wait_for(lambda: page.answers() == ["now?"] and not page.answering())
    page.shot("busy")


def test_with_an_api_key_the_page_asks_for_it_once_and_chats(gateway_factory, open_page):
    key = "page-key-0123456789"
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_API_KEY=key, headers={"Authorization": f"Bearer {key}"})
    assert httpx.get(gw.url + "/v1/models").status_code == 401  # the API still needs the key
    page = open_page(gw, wait=False)
    dialog = page.q("#key-dialog")
    wait_for(dialog.is_displayed)
    # A wrong key is refused and asked again, saying so.
    page.q("#key-input").send_keys("wrong" + Keys.ENTER)
    wait_for(lambda: dialog.is_displayed() and "refused" in page.q("#key-why").text)
    page.q("#key-input").send_keys(key + Keys.ENTER)
    page.wait_models()
    assert not dialog.is_displayed()
    page.pick_model(ECHO)
    page.send("echo:with a key")
    wait_for(lambda: page.answers() == ["with a key"] and not page.answering())
    # Kept for this tab only: not in the saved chats, not in localStorage.
    assert page.js("return sessionStorage.getItem('corral-api-key')") == key
    assert key not in page.js("return JSON.stringify({...localStorage})")
    chat_posts = [r for r in page.requests() if r["url"].endswith("/v1/chat/completions")]
    assert chat_posts and all(r["headers"].get("Authorization") == f"Bearer {key}" for r in chat_posts)
    page.assert_only_gateway_requests()
    assert [e for e in page.console_errors() if "401" not in e["message"]] == []
