"""Take the README's screenshots of the chat page from the real thing: a
supervisor and gateway in a throwaway CORRAL_HOME, SmolLM2 answering, and
Chromium driven as the browser tests drive it.

    python docs/take_screenshots.py        # writes docs/chat.png and docs/models.png
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from browser_support import Page, launch  # noqa: E402
from conftest import SMOLLM2, stop_supervisor, wait_for  # noqa: E402
from gateway_fixture import start_gateway  # noqa: E402

PROMPT = "Explain what a Python list comprehension is, with a short example in a code block."


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="corral-shots-", dir="/tmp"))
    os.environ["CORRAL_HOME"] = str(home)
    page = None
    try:
        gateway = start_gateway(home)
        page = Page(launch(home / "chromium", size=(1200, 760)), gateway, DOCS)
        page.open()
        page.pick_model(SMOLLM2)
        page.set_option("temperature", "0")
        page.set_option("max-tokens", "150")
        page.q("#toggle-options").click()  # folded away again for the picture
        page.send(PROMPT)
        page.wait_answered(timeout=300)
        page.js("document.activeElement.blur()")
        page.shot("chat")
        page.show_models()
        wait_for(lambda: page.model_state(SMOLLM2) == "ready" and "estimate" in page.model_row(SMOLLM2).text)
        page.shot("models")
        print(f"wrote {DOCS / 'chat.png'} and {DOCS / 'models.png'}")
    finally:
        if page is not None:
            page.driver.quit()
        stop_supervisor(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
