"""The gateway's ASGI application: routes, middleware, errors, lifespan.

Layers, outermost first: request counting (every answer, refusals
included), Host/Origin check, CORS (only with CORRAL_HTTP_ORIGINS), API key
and body cap, then Starlette's router. The connection to the supervisor
opens at startup and closes at shutdown.

Why Starlette with msgspec rather than FastAPI with pydantic: the same
JSON POST route costs 68 µs of server CPU per request with the first and
175 µs with the second (uvicorn, uvloop, httptools, 8 in flight, on the
2-core development machine); the OpenAPI schema that FastAPI would derive
is generated from the msgspec structs instead (``openapi.py``).
"""

from __future__ import annotations

import contextlib
import traceback
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.configs.settings import Settings
from corral.gateway import (anthropic_routes, engines_routes, llama_server_routes, ollama_routes, openai_routes,
                            responses_routes, ui_page)
from corral.gateway.config import MAX_BODY_BYTES, GatewayConfig
from corral.gateway.disconnect import ClientGone
from corral.gateway.errors import HTTPError, error_response
from corral.gateway.metrics import Metrics
from corral.gateway.openapi import openapi_schema
from corral.gateway.response_store import Store
from corral.gateway.route_support import JSONResponse, link
from corral.gateway.security import HostAndOrigin, KeyAndBodyLimit
from corral.gateway.supervisor_link import SupervisorLink
from corral.supervisor.errors import CorralError
from corral.supervisor.logs import get_logger

log = get_logger()

# Docker Model Runner serves the OpenAI routes under these prefixes too.
OPENAI_PREFIXES = ("/v1", "/engines/v1", "/engines/llama.cpp/v1")


async def metrics_route(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    metrics.set_models(await link(request).ps())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


async def openapi_route(request: Request) -> Response:
    return JSONResponse(openapi_schema(request.app.routes))


def static_folder() -> Path | None:
    """``gateway/static`` when the browser page is there."""
    folder = Path(str(resources.files("corral.gateway").joinpath("static")))
    return folder if (folder / "index.html").is_file() else None


class PreflightNoContent(CORSMiddleware):
    """Starlette's CORS handling, with an allowed preflight answered 204 No
    Content (as llama-server and browsers' own servers do) instead of a 200
    carrying "OK"; a refused one stays a 400."""

    def preflight_response(self, request_headers: Any) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 200:
            return answer
        headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
        return Response(status_code=204, headers=headers)


def api_routes() -> list[BaseRoute]:
    table: list[BaseRoute] = []
    for prefix in OPENAI_PREFIXES:
        table += openai_routes.routes(prefix) + responses_routes.routes(prefix) + anthropic_routes.routes(prefix)
    # Docker Model Runner also serves Anthropic's routes under /anthropic and
    # the Responses API at /responses
    table += anthropic_routes.routes("/anthropic/v1") + responses_routes.routes("")
    # llama-server serves the OpenAI routes at the root too (but /models is
    # Docker Model Runner's there), and its own /completion, /health, /props
    table += [r for r in openai_routes.routes("") if not r.path.startswith("/models")] + llama_server_routes.routes()
    table += ollama_routes.routes() + engines_routes.routes()
    table += [
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
    ]
    folder = static_folder()
    if folder is not None:
        table.append(Mount("/ui", ui_page.PageFiles(folder), name="ui"))  # with its CSP
    return table


async def _corral_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorralError)
    if exc.code not in ("model_not_found", "bad_request", "bad_usage"):
        log.info("request failed", path=request.url.path, code=exc.code, error=exc.message)
    return error_response(exc, request.url.path)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody reads this answer; the status (nginx's "client closed request")
    # is for the request count only.
    if isinstance(exc, ClientDisconnect):
        log.info("client hung up before sending the whole request", path=request.url.path)
    else:
        log.debug("client hung up before the answer", path=request.url.path)
    return Response(status_code=499)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = HTTPError("method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
    else:
        error = HTTPError("not_found", f"no route {request.url.path}; GET /openapi.json lists the routes")
    return error_response(error, request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    trace = "".join(traceback.format_exception(exc))
    log.error("unexpected error", path=request.url.path, error=repr(exc), traceback=trace[-4000:])
    return error_response(CorralError(f"internal error in the gateway ({type(exc).__name__}); see the gateway log"), request.url.path)


class CountRequests:
    """Counts every answer by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            # Answered (500) and logged by the app's handler already; raised
            # on, uvicorn would only log it a second time.
            pass
        finally:
            route = scope.get("route")
            self.metrics.count_request(getattr(route, "path", "unmatched"), status)


def build_app(settings: Settings, config: GatewayConfig) -> ASGIApp:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        supervisor = SupervisorLink(settings, metrics)
        await supervisor.start()
        app.state.link = supervisor
        log.info("gateway ready", address=config.address, socket=str(settings.socket_path))
        try:
            yield
        finally:
            await supervisor.close()
            app.state.responses.close()

    app = Starlette(
        routes=api_routes(),
        lifespan=lifespan,
        exception_handlers={CorralError: _corral_error, ClientGone: _client_gone, ClientDisconnect: _client_gone,
                            HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.config = config
    app.state.responses = Store(settings.home / "responses.db")
    outer: ASGIApp = KeyAndBodyLimit(app, config, MAX_BODY_BYTES)
    if config.origins:
        outer = PreflightNoContent(
            outer,
            allow_origins=list(config.origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Preload-Only", "X-Api-Key", "Anthropic-Version"],
            max_age=600,
        )
    outer = HostAndOrigin(outer, config)
    return CountRequests(outer, metrics)
