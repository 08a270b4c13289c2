"""Who may call the gateway, and with how much: plain ASGI middleware.

- ``Host`` must name this server (loopback names or the bound address): a
  web page whose DNS name is rebound to 127.0.0.1 still sends its own name
  and is refused (DNS rebinding, Ollama's CVE-2024-28224).
- A browser's ``Origin`` must be this server itself or one listed in
  ``CORRAL_HTTP_ORIGINS``: another site cannot make a visitor's browser
  spend this machine's CPU, even with a "simple" request that skips CORS.
- With ``CORRAL_API_KEY``, every request carries ``Authorization: Bearer
  KEY``, compared in constant time (CORS preflights excepted: browsers send
  them without credentials; so are the chat page's own files, which hold
  no data and which a browser cannot fetch with a header: the page then
  asks for the key and sends it with every API call).
- Bodies stop at 10 MiB: by ``Content-Length`` at once, or while a chunked
  body is read.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.gateway.config import GatewayConfig
from corral.gateway.errors import HTTPError, error_response


async def _refuse(exc: HTTPError, scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(exc, scope["path"])(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def host_name(host: str) -> str:
    """A Host header without its port: ``[::1]:8080`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


class HostAndOrigin:
    def __init__(self, app: ASGIApp, config: GatewayConfig):
        self.app = app
        self.hosts = config.allowed_hosts()
        self.origins = frozenset(config.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return await _refuse(HTTPError("forbidden", f"Host {host[:100]!r} is not this server; use http://127.0.0.1 or http://localhost"), scope, receive, send)
        origin = _header(scope, b"origin")
        if origin is not None:
            text = origin.decode("latin-1").rstrip("/")
            same_origin = text in (f"http://{host}", f"https://{host}")
            if not same_origin and text not in self.origins:
                return await _refuse(HTTPError("forbidden", f"origin {text[:100]!r} is not allowed; list it in CORRAL_HTTP_ORIGINS"), scope, receive, send)
        await self.app(scope, receive, send)


def _page_file(scope: Scope) -> bool:
    """A GET of the chat page's static files."""
    path = scope["path"]
    return scope["method"] in ("GET", "HEAD") and (path == "/ui" or path.startswith("/ui/"))


class KeyAndBodyLimit:
    def __init__(self, app: ASGIApp, config: GatewayConfig, max_body: int):
        self.app = app
        self.expected = f"Bearer {config.api_key}".encode() if config.api_key else None
        self.key = config.api_key.encode() if config.api_key else None  # Anthropic's clients send x-api-key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.expected is not None and scope["method"] != "OPTIONS" and not _page_file(scope):
            given = _header(scope, b"authorization") or b""
            as_key = _header(scope, b"x-api-key")
            if as_key is not None and not given:
                given, expected = as_key, self.key
            else:
                expected = self.expected
            if not hmac.compare_digest(given, expected):
                why = "a wrong API key" if given else "no API key"
                return await _refuse(HTTPError("unauthorized", f"{why}: send the header 'Authorization: Bearer $CORRAL_API_KEY'"), scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _refuse(self._too_large(), scope, receive, send)
        await self.app(scope, self._capped(receive) if length is None else receive, send)

    def _too_large(self) -> HTTPError:
        return HTTPError("request_too_large", f"the request body is over the {self.max_body // 2**20} MiB limit; send less")

    def _capped(self, receive: Receive) -> Receive:
        """A chunked body, counted as it arrives."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise self._too_large()
            return message

        return counted
