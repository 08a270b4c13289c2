"""A real browser for the chat page's tests: Debian's chromium, driven
through its chromedriver by selenium, headless, in a fresh profile, with
everything that would reach outside this machine turned off.

``Page`` is the chat page in one window, with what a user looks at (the
answers, the Models tab, errors) and what the tests check besides: the
console and every request the page made (Chromium's performance log).
A missing browser fails the test; it is never a skip.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import wait_for
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# This machine refuses outside connections: nothing may try one.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
DESKTOP = (1280, 800)


def launch(profile: Path, size: tuple[int, int] = DESKTOP) -> webdriver.Chrome:
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert binary.exists(), f"{binary} is missing: apt-get install {package} (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def corral_ps(corral) -> list[dict]:
    """What `corral ps --json` says (``corral``: the conftest fixture)."""
    result = corral("ps", "--json")
    assert result.code == 0, result
    return json.loads(result.out)


class Page:
    """The chat page served by ``gateway``, in one browser."""

    def __init__(self, driver: webdriver.Chrome, gateway, shots: Path):
        self.driver = driver
        self.gateway = gateway
        self.shots = shots
        self._requests: list[dict] = []
        self._console: list[dict] = []

    # -- what the browser saw ------------------------------------------------

    def _read_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self._requests.append(message["params"]["request"])
        self._console += self.driver.get_log("browser")

    def requests(self) -> list[dict]:
        """Every request the page made since ``open`` (url, method, postData)."""
        self._read_logs()
        return list(self._requests)

    def console_errors(self) -> list[dict]:
        self._read_logs()
        return [e for e in self._console if e["level"] == "SEVERE"]

    def assert_only_gateway_requests(self) -> None:
        origin = urlsplit(self.gateway.url)
        urls = [r["url"] for r in self.requests()]
        assert urls, "the performance log recorded no request"
        strays = [u for u in urls if (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)]
        assert not strays, f"requests beyond the gateway {self.gateway.url}: {strays}"

    def chat_requests(self) -> list[dict]:
        """The JSON bodies the page posted to the chat route."""
        return [json.loads(r["postData"]) for r in self.requests() if r["url"].endswith("/v1/chat/completions") and r.get("postData")]

    # -- driving it ------------------------------------------------------------

    def open(self, path: str = "/ui/", wait: bool = True) -> "Page":
        # Whatever the browser loaded at start-up is not the page's doing.
        self.driver.get("about:blank")
        self.driver.get_log("performance")
        self.driver.get(self.gateway.url + path)
        if wait:
            self.wait_models()
        return self

    def reload(self) -> None:
        self.driver.refresh()
        self.wait_models()

    def wait_models(self) -> None:
        wait_for(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#model option"), timeout=30)

    def q(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def qq(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def pick_model(self, name: str) -> None:
        Select(self.q("#model")).select_by_value(name)

    def set_option(self, field_id: str, value: str) -> None:
        if not self.q("#options").is_displayed():
            self.q("#toggle-options").click()
        field = self.q(f"#{field_id}")
        field.clear()
        field.send_keys(value)

    def send(self, text: str) -> None:
        """Type ``text`` and press Enter, as a person does."""
        box = self.q("#input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def answering(self) -> bool:
        return self.q("#stop").is_displayed()

    def wait_answered(self, timeout: float = 120) -> None:
        wait_for(lambda: not self.answering(), timeout=timeout)

    def texts(self, css: str) -> list[str]:
        # textContent, not .text: the latter drops what CSS hides or clips
        return self.js("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)

    def answers(self) -> list[str]:
        return self.texts("#messages .msg.assistant .body")

    def errors(self) -> list[str]:
        return self.texts("#messages .msg.error")

    def show_models(self) -> None:
        self.q("#tab-models").click()
        wait_for(lambda: self.qq('#model-list li[data-model]'), timeout=30)

    def model_row(self, name: str) -> WebElement:
        return self.q(f'#model-list li[data-model="{name}"]')

    def model_state(self, name: str) -> str:
        return self.model_row(name).find_element(By.CSS_SELECTOR, ".state").text

    def watch_states(self, name: str) -> None:
        """Record every state the model's row shows from now on."""
        self.js(
            "const badge = arguments[0]; window.seenStates = [badge.textContent];"
            "new MutationObserver(() => seenStates.push(badge.textContent)).observe(badge, {childList: true, characterData: true, subtree: true})",
            self.model_row(name).find_element(By.CSS_SELECTOR, ".state"),
        )

    def seen_states(self) -> list[str]:
        """The states recorded since ``watch_states``, each change once."""
        states = self.js("return window.seenStates")
        return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def open_page(tmp_path):
    """``open_page(gateway, size=(w, h))``: the chat page in a fresh browser.
    Each browser leaves a screenshot of its last state in ``tmp_path``."""
    pages: list[Page] = []

    def start(gateway, size: tuple[int, int] = DESKTOP, path: str = "/ui/", wait: bool = True) -> Page:
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
        page = Page(launch(profile, size), gateway, tmp_path)
        pages.append(page)
        if size[0] < 500:  # below Chromium's smallest window: a phone's screen, as DevTools emulates it
            metrics = {"width": size[0], "height": size[1], "deviceScaleFactor": 2, "mobile": True}
            page.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        return page.open(path, wait)

    yield start
    for i, page in enumerate(pages):
        try:
            page.shot(f"last-{i}")
        finally:
            page.driver.quit()
