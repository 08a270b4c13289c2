"""Errors as HTTP answers: a CorralError's code becomes a status, and the body
takes the shape the route's clients expect (OpenAI's ``{"error": {...}}``,
Ollama's ``{"error": "..."}``)."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from corral.supervisor.errors import CorralError

# CorralError.code -> HTTP status. Anything not listed is a 500.
STATUS_BY_CODE = {
    "bad_request": 400,
    "bad_usage": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "model_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "model_in_use": 409,
    "request_too_large": 413,
    "model_load_failed": 500,
    "generation_failed": 500,
    "internal_error": 500,
    "worker_crashed": 502,
    "crash_loop": 502,
    # a registry that fails or serves a blob that does not match its digest
    "registry_error": 502,
    "blob_corrupt": 502,
    "busy": 503,
    "cancelled": 503,
    "shutting_down": 503,
    "supervisor_unreachable": 503,
    "insufficient_memory": 507,
    "disk_full": 507,
}
# Every status a route may answer with, for the OpenAPI schema.
ERROR_STATUSES = sorted(set(STATUS_BY_CODE.values()))
# Seconds a client should wait before trying again, by code.
RETRY_AFTER = {"busy": "1", "crash_loop": "60", "shutting_down": "1", "supervisor_unreachable": "1"}

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error", 413: "invalid_request_error"}


class HTTPError(CorralError):
    """An error the gateway itself finds (no such route, a refused caller)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def status_for(exc: CorralError) -> int:
    return STATUS_BY_CODE.get(exc.code, 500)


def error_headers(exc: CorralError, status: int) -> dict[str, str]:
    headers = {}
    if exc.code in RETRY_AFTER:
        headers["Retry-After"] = RETRY_AFTER[exc.code]
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="corral"'
    return headers


def openai_body(exc: CorralError, status: int) -> dict:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": exc.message, "type": kind, "param": None, "code": exc.code}}


def ollama_body(exc: CorralError, status: int) -> dict:
    return {"error": exc.message}


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def anthropic_body(exc: CorralError, status: int) -> dict:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": exc.message}}


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def is_anthropic_path(path: str) -> bool:
    return path.endswith(("/v1/messages", "/v1/messages/count_tokens"))


def error_response(exc: CorralError, path: str) -> Response:
    """The whole HTTP answer for an error on ``path``."""
    status = status_for(exc)
    shape = ollama_body if is_ollama_path(path) else anthropic_body if is_anthropic_path(path) else openai_body
    body = shape(exc, status)
    return Response(msgspec.json.encode(body), status, headers=error_headers(exc, status), media_type="application/json")
