"""The gateway's OpenAPI 3.1 schema, generated from its route table and the
msgspec structs that decode the bodies: a route or a field cannot be added
without the schema following. Served at ``GET /openapi.json``."""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable

import msgspec
from starlette.routing import BaseRoute, Mount, Route

from corral.gateway import engines_routes, ollama_routes, openai_routes, schemas
from corral.gateway.errors import ERROR_STATUSES

# endpoint -> the struct its body decodes to
BODIES: dict[Any, type] = {
    openai_routes.chat_completions: schemas.ChatCompletionRequest,
    openai_routes.completions: schemas.CompletionRequest,
    openai_routes.embeddings: schemas.EmbeddingRequest,
    engines_routes.engines_unload: schemas.UnloadRequest,
    ollama_routes.generate: schemas.OllamaGenerateRequest,
    ollama_routes.chat: schemas.OllamaChatRequest,
    ollama_routes.show: schemas.OllamaShowRequest,
    ollama_routes.embed: schemas.OllamaEmbedRequest,
    ollama_routes.pull: schemas.OllamaPullRequest,
    engines_routes.create_model: schemas.CreateModelRequest,
}
# endpoint -> media types of a 200 other than JSON
STREAMS = {
    openai_routes.chat_completions: ("application/json", "text/event-stream"),
    openai_routes.completions: ("application/json", "text/event-stream"),
    ollama_routes.generate: ("application/json", "application/x-ndjson"),
    ollama_routes.chat: ("application/json", "application/x-ndjson"),
    ollama_routes.pull: ("application/json", "application/x-ndjson"),
    engines_routes.root: ("text/plain",),
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_ERROR = {"type": "object", "properties": {"error": {}}, "required": ["error"]}


@functools.lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(schemas.REQUEST_BODIES, ref_template="#/components/schemas/{name}")
    return components


def _operation(route: Route, method: str) -> dict[str, Any]:
    endpoint = route.endpoint
    media = STREAMS.get(endpoint, ("application/json",))
    if route.path == "/metrics":
        media = ("text/plain",)
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', route.path)}",
        "responses": {
            "200": {"description": "OK", "content": {m: {} for m in media}},
            **{str(s): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for s in ERROR_STATUSES},
        },
    }
    params = _PARAM.findall(route.path)
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}} for p in params]
    if endpoint in BODIES:
        ref = {"$ref": f"#/components/schemas/{BODIES[endpoint].__name__}"}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    return op


def openapi_path(path: str) -> str:
    """Starlette's ``/models/{name:path}`` as OpenAPI's ``/models/{name}``."""
    return _PARAM.sub(r"{\1}", path)


def openapi_schema(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if isinstance(route, Mount):
            paths[route.path + "/"] = {"get": {"operationId": "get_ui", "responses": {"200": {"description": "the browser chat page", "content": {"text/html": {}}}}}}
            continue
        if not isinstance(route, Route):
            continue
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            paths.setdefault(openapi_path(route.path), {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "corral gateway", "version": "1", "description": "OpenAI-, Docker Model Runner- and Ollama-compatible HTTP API of corral"},
        "paths": paths,
        "components": {"schemas": _components()},
    }
