"""schemathesis over the gateway's own OpenAPI schema: generated requests,
valid and not, against a real gateway and supervisor. Every answer must be
a status the schema declares, never an internal error (500) or a crash."""

from __future__ import annotations

import pytest
import schemathesis
from gateway_fixture import gateway, gateway_factory  # noqa: F401  (fixtures)
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext
from schemathesis.specs.openapi.checks import status_code_conformance

pytestmark = pytest.mark.integration


@schemathesis.check
def no_internal_error(ctx: CheckContext, response, case) -> None:
    """A 500 is the gateway failing, whatever the request was."""
    assert response.status_code != 500, f"{case.method} {case.path}: 500 {response.text[:300]}"
    if response.status_code >= 400:
        assert "error" in response.json(), response.text[:300]


# Answers are cut to 32 tokens (a valid value), so that the run tests the
# API rather than waiting for a model to write a book.
MAX_LENGTH = 32


def _cut(body: dict, name: str) -> None:
    value = body.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > MAX_LENGTH):
        body[name] = MAX_LENGTH


def shorten(path: str, body) -> None:
    if not isinstance(body, dict):
        return
    if path.endswith("completions"):
        _cut(body, "max_tokens")
        if "max_completion_tokens" in body:
            _cut(body, "max_completion_tokens")
    elif path == "/completion":
        if not isinstance(body.get("n_predict"), int) or not 0 < body["n_predict"] <= MAX_LENGTH:
            body["n_predict"] = MAX_LENGTH  # -1 would be "no limit"
    elif path in ("/api/chat", "/api/generate"):
        if body.get("options") is None:
            body["options"] = {}
        if isinstance(body["options"], dict):
            _cut(body["options"], "num_predict")


# Docker Model Runner's prefixes serve the very handlers of /v1 (the same
# route table, mounted three times: test_gateway_engines checks they answer),
# as do /anthropic/v1, /responses and the OpenAI routes at the root;
# fuzzing them again would only triple the run. (The filter goes on the lazy
# schema: one set on the fixture's schema is not applied.)
schema = schemathesis.pytest.from_fixture("gateway_schema").exclude(
    path_regex=r"^/(engines/(llama\.cpp/)?v1|anthropic/v1|responses)(/|$)|^/(chat/completions|completions|embeddings)$")


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_declared_answers(case, gateway):
    shorten(case.path, case.body)
    case.call_and_validate(base_url=gateway.url, checks=[status_code_conformance, no_internal_error], timeout=120)


@pytest.fixture
def gateway_schema(gateway, corral_home, tiny_files):
    # The schema's example model is ai/smollm2: here a tiny model stands in
    # for it (a user catalog entry overrides the shipped one), so that the
    # generated requests that name it finish in moments.
    (corral_home / "models.toml").write_text(f'[models."ai/smollm2"]\npath = "{tiny_files["llama"]}"\ncontext_length = 256\n')
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json")
