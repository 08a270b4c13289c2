"""The browser chat page (``gateway/static``): served at ``/ui`` with
headers that let it run only its own files, and reached from ``/`` by a
browser.

The Content-Security-Policy allows scripts, styles, images and requests
from the page's own origin only: no inline script, no outside origin, no
frames. ``require-trusted-types-for 'script'`` makes the browser refuse any
string assigned to ``innerHTML`` and its kin, so model output can only ever
reach the page as text (the page builds its DOM with ``textContent``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

PAGE_PATH = "/ui/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # revalidated each time (ETag): an upgraded corral serves its new page
    (b"cache-control", b"no-cache"),
]


class PageFiles:
    """The static files, each answer with ``PAGE_HEADERS``."""

    def __init__(self, folder: Path):
        self.files = StaticFiles(directory=folder, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in PAGE_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + PAGE_HEADERS}
            await send(message)

        await self.files(scope, receive, with_headers)


def wants_page(request: Request) -> bool:
    """A browser opening the address asks for HTML; API clients do not."""
    return "text/html" in request.headers.get("accept", "")
