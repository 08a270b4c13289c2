"""What every route handler shares: the app's state, decoding a body, and
running a generation while watching for the client to hang up."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON

from corral.configs.settings import Settings
from corral.gateway import tools
from corral.gateway.disconnect import until_disconnect
from corral.gateway.model_listing import tool_format
from corral.gateway.schemas import decode_body
from corral.gateway.supervisor_link import Generation, SupervisorLink
from corral.supervisor.errors import Cancelled

T = TypeVar("T")


class JSONResponse(_StarletteJSON):
    """JSON written by msgspec: several times faster than the json module."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def link(request: Request) -> SupervisorLink:
    return request.app.state.link


def settings(request: Request) -> Settings:
    return request.app.state.settings


async def body(request: Request, kind: type[T]) -> T:
    return decode_body(await request.body(), kind)


def for_model(request: Request, model: str, plan: tools.Plan) -> tools.Plan:
    """``plan`` in the model's own call syntax where its chat template
    renders tools (``tool_formats.py``), else in the generic form."""
    if not plan.functions:
        return plan
    return replace(plan, format=tool_format(settings(request), model))


def preload_only(request: Request) -> bool:
    """Docker Model Runner's ``X-Preload-Only: true``: load, do not generate."""
    return request.headers.get("x-preload-only", "").lower() == "true"


async def open_generation(request: Request, op: str, model: str, payload: Any, options: dict[str, Any]) -> Generation:
    """A generation whose first event has arrived (its errors raised)."""
    return await until_disconnect(request.receive, lambda: link(request).generation(op, model, payload, options))


async def complete(request: Request, op: str, model: str, payload: Any, options: dict[str, Any]) -> tuple[Generation, str]:
    """A whole answer: the generation and its text. A client that hangs up
    meanwhile cancels it."""
    generation: Generation | None = None

    async def run() -> str:
        nonlocal generation
        generation = await link(request).generation(op, model, payload, options)
        return await generation.text()

    try:
        text = await until_disconnect(request.receive, run)
    except BaseException:
        if generation is not None:
            await generation.cancel()
        raise
    if generation.stopped == "cancelled":
        raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping; send it again")
    return generation, text


def unix_now() -> int:
    return int(time.time())


def iso_time(ts: float | None) -> str | None:
    """Unix time as the ISO 8601 UTC text these APIs use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None
