"""What every route handler shares: the app's state, decoding a body, and
running a generation while watching for the client to hang up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON

from corral.configs.settings import Settings
from corral.gateway import tools
from corral.gateway.sampling import model_name
from corral.gateway.disconnect import until_disconnect
from corral.gateway.model_listing import tool_format
from corral.gateway.schemas import decode_body
from corral.gateway.supervisor_link import Generation, SupervisorLink
from corral.supervisor.errors import BadRequest, Cancelled

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


async def model_for(request: Request, name: str | None) -> str:
    """The model a request runs: the one it names, else the default model,
    else the only model loaded."""
    if name:
        return model_name(name)
    default = settings(request).default_model
    if default:
        return default
    loaded = sorted({row["model"] for row in await link(request).ps()})
    if len(loaded) == 1:
        return loaded[0]
    which = "several models are loaded" if loaded else "no model is loaded"
    raise BadRequest(f"model: name the model to run ({which} and CORRAL_DEFAULT_MODEL is not set)")


def preload_only(request: Request) -> bool:
    """Docker Model Runner's ``X-Preload-Only: true``: load, do not generate."""
    return request.headers.get("x-preload-only", "").lower() == "true"


async def open_generation(request: Request, op: str, model: str, payload: Any, options: dict[str, Any]) -> Generation:
    """A generation whose first event has arrived (its errors raised)."""
    return (await open_generations(request, op, model, payload, [options]))[0]


async def open_generations(request: Request, op: str, model: str, payload: Any, each: list[dict[str, Any]]) -> list[Generation]:
    """One generation per options map, started together (so the worker
    decodes them side by side), each with its first event in; if one fails
    the others are cancelled and its error raised."""
    return await until_disconnect(request.receive, lambda: _open_all(request, op, model, payload, each))


async def _open_all(request: Request, op: str, model: str, payload: Any, each: list[dict[str, Any]]) -> list[Generation]:
    opened = await asyncio.gather(*(link(request).generation(op, model, payload, o) for o in each), return_exceptions=True)
    failed = next((g for g in opened if isinstance(g, BaseException)), None)
    if failed is not None:
        for g in opened:
            if isinstance(g, Generation):
                await g.cancel()
        raise failed
    return list(opened)  # type: ignore[arg-type]


async def complete(request: Request, op: str, model: str, payload: Any, options: dict[str, Any]) -> tuple[Generation, str]:
    """A whole answer: the generation and its text. A client that hangs up
    meanwhile cancels it."""
    return (await complete_all(request, op, model, payload, [options]))[0]


async def complete_all(request: Request, op: str, model: str, payload: Any, each: list[dict[str, Any]]) -> list[tuple[Generation, str]]:
    """Whole answers, one per options map, decoded side by side."""
    generations: list[Generation] = []

    async def run() -> list[str]:
        generations.extend(await _open_all(request, op, model, payload, each))
        return list(await asyncio.gather(*(g.text() for g in generations)))

    try:
        texts = await until_disconnect(request.receive, run)
    except BaseException:
        for g in generations:
            await g.cancel()
        raise
    if any(g.stopped == "cancelled" for g in generations):
        raise Cancelled("the answer was cancelled: its model was unloaded or the supervisor is stopping; send it again")
    return list(zip(generations, texts))


def unix_now() -> int:
    return int(time.time())


def iso_time(ts: float | None) -> str | None:
    """Unix time as the ISO 8601 UTC text these APIs use."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None
