"""Docker Model Runner's own paths: ``/engines/status``, ``/engines/ps``,
``/engines/unload``, ``/models`` and ``/``. (Its OpenAI routes under
``/engines/v1`` are ``openai_routes`` mounted again.)"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from corral.configs import catalog
from corral.configs.settings import format_size
from corral.gateway import route_support as rs
from corral.gateway import sampling, schemas, ui_page
from corral.gateway.model_listing import ModelInfo, find_model, list_models
from corral.gateway.route_support import JSONResponse
from corral.store import api as store_api
from corral.supervisor.errors import ModelNotFound



def runner(row: dict) -> dict:
    """One ``ps`` row as Docker Model Runner's runner item, plus corral's
    own facts (the browser page shows them)."""
    keep_alive = row.get("keep_alive_s")
    expires = row.get("expires_at")
    state = row.get("state")
    if state == "busy":
        last_used = time.time()
    elif expires is not None and keep_alive is not None:
        last_used = expires - keep_alive  # the idle timer started at the last use
    else:
        last_used = None
    return {
        "backend_name": row.get("backend"),
        "model_name": row.get("replica_of") or row.get("model"),
        "mode": "completion",
        "last_used": rs.iso_time(last_used),
        "in_use": state == "busy",
        "loading": state in ("waiting", "loading"),
        # seconds; -1: never unloaded
        "keep_alive": -1 if keep_alive is None else keep_alive,
        **{k: row.get(k) for k in ("model", "pid", "state", "rss_bytes", "estimate_bytes", "context_length", "expires_at", "keep_alive_s", "queued", "served", "load_ms")},
    }


async def engines_ps(request: Request) -> Response:
    return JSONResponse([runner(row) for row in await rs.link(request).ps()])


async def engines_status(request: Request) -> Response:
    running = {row.get("backend") for row in await rs.link(request).ps() if row.get("pid")}
    return JSONResponse({name: ("running" if name in running else "not running") for name in catalog.BACKENDS})


async def engines_unload(request: Request) -> Response:
    req = await rs.body(request, schemas.UnloadRequest)
    link = rs.link(request)
    if req.all:
        return JSONResponse({"unloaded_runners": len(await link.unload(all=True))})
    count = 0
    for name in req.models:
        try:
            count += len(await link.unload(sampling.model_name(name)))
        except ModelNotFound:
            pass  # as Docker Model Runner: a model that is not running unloads nothing
    return JSONResponse({"unloaded_runners": count})


def dmr_model(info: ModelInfo) -> dict:
    return {
        "id": f"sha256:{info.digest}",
        "tags": [info.tagged_name],
        "created": info.created,
        "config": {
            "format": info.format,
            "quantization": info.quantization,
            "parameters": info.parameters,
            "architecture": info.architecture,
            "size": format_size(info.size),
            "context_size": info.context_length,
            "estimate_bytes": info.estimate_bytes,
        },
    }


async def models(request: Request) -> Response:
    return JSONResponse([dmr_model(m) for m in list_models(rs.settings(request))])


async def model(request: Request) -> Response:
    return JSONResponse(dmr_model(find_model(rs.settings(request), request.path_params["name"])))


async def create_model(request: Request) -> Response:
    """Pull a model into the store (``{"from": "ai/smollm2"}``)."""
    req = await rs.body(request, schemas.CreateModelRequest)
    result = await store_api.pull_model(sampling.model_name(req.from_), rs.settings(request))
    return JSONResponse({"status": "success", "model": result.display, "id": result.id})


async def root(request: Request) -> Response:
    if ui_page.wants_page(request):  # a browser: the chat page
        return RedirectResponse(ui_page.PAGE_PATH, status_code=303)
    return PlainTextResponse("corral is running\n")


def routes() -> list[Route]:
    return [
        Route("/", root, methods=["GET"]),
        Route("/engines/status", engines_status, methods=["GET"]),
        Route("/engines/ps", engines_ps, methods=["GET"]),
        Route("/engines/unload", engines_unload, methods=["POST"]),
        Route("/models", models, methods=["GET"]),
        Route("/models/create", create_model, methods=["POST"]),
        Route("/models/{name:path}", model, methods=["GET"]),
    ]

