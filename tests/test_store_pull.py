"""Pulling, packaging, pushing, listing, tagging and removing models against a
real registry (Debian's docker-registry). Artifacts are pushed two ways: by
corral's own ``package --push``, and by the oras SDK writing Docker Model
Runner's media types by hand."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import CORRAL, assert_one_line_error
from registry import StallingProxy, dmr_config, own_registry, push_with_oras, registry, tiny_gguf  # noqa: F401

pytestmark = pytest.mark.integration

GGUF = "application/vnd.docker.ai.gguf.v3"
LICENSE = "application/vnd.docker.ai.license"
CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def registry_manifest(registry, repository: str) -> bytes:
    """The manifest as the registry serves it (read by httpx, not by corral)."""
    import httpx

    response = httpx.get(f"{registry.url}/v2/{repository}/manifests/latest",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    response.raise_for_status()
    return response.content


def listed(corral) -> dict[str, dict]:
    result = corral("list", "--json")
    assert result.code == 0, result
    return {row["model"]: row for row in json.loads(result.out)}


@pytest.fixture
def oras_model(registry, tmp_path):
    """A tiny GGUF model with a licence, pushed by oras in DMR's layout."""
    gguf = tiny_gguf(tmp_path, seed=11)
    licence = tmp_path / "LICENSE"
    licence.write_text("Apache-2.0\n")
    push_with_oras(registry.host, "oras/tiny", [(gguf, GGUF), (licence, LICENSE)], dmr_config(context_size=256), CONFIG)
    return f"{registry.host}/oras/tiny", gguf


def test_pull_what_oras_pushed_and_run_it(corral, oras_model, corral_home):
    ref, gguf = oras_model
    result = corral("pull", ref)
    assert result.code == 0, result
    assert "Pulled" in result.out
    row = listed(corral)[ref]
    assert row["source"] == "store" and row["context_size"] == 256 and row["architecture"] == "llama"
    assert Path(row["path"]).read_bytes() == gguf.read_bytes()  # what runs is the verified blob
    blob = corral_home / "models" / "blobs" / "sha256" / sha256(gguf).split(":")[1]
    assert blob.is_file()
    answer = corral("run", ref, "Hi", "--max-tokens", "4", "--temperature", "0")
    assert answer.code == 0, answer
    assert answer.out.strip()


def test_package_push_pull_run(corral, registry, tmp_path):
    """Done when: corral pull localhost:PORT/test/tiny:latest && corral run localhost:PORT/test/tiny "Hi"."""
    ref = f"{registry.host}/test/tiny"
    gguf = tiny_gguf(tmp_path, seed=1)
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    made = corral("package", "--gguf", str(gguf), "--context-size", "256", "--chat-template", str(template),
                  "--license", str(gguf), f"{ref}:latest", "--push")
    assert made.code == 0, made
    manifest = json.loads(registry_manifest(registry, "test/tiny"))
    assert manifest["config"]["mediaType"] == CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [GGUF, LICENSE, "application/vnd.docker.ai.chat.template.jinja"]
    assert manifest["layers"][0]["annotations"]["org.cncf.model.filepath"] == gguf.name
    assert manifest["layers"][0]["digest"] == sha256(gguf)
    assert corral("rm", ref).code == 0
    assert ref not in listed(corral)

    pulled = corral("pull", f"{ref}:latest")
    assert pulled.code == 0, pulled
    answer = corral("run", ref, "Hi", "--max-tokens", "4")
    assert answer.code == 0, answer
    assert answer.out.strip()


def test_run_pulls_a_missing_model_first(corral, registry, tmp_path):
    ref = f"{registry.host}/auto/tiny"
    push_with_oras(registry.host, "auto/tiny", [(tiny_gguf(tmp_path, seed=2), GGUF)], dmr_config(256), CONFIG)
    answer = corral("run", ref, "Hi", "--max-tokens", "4")
    assert answer.code == 0, answer
    assert f"Unable to find model '{ref}' locally. Pulling…" in answer.err
    assert ref in listed(corral)


def test_a_missing_model_is_not_found(corral, registry):
    result = corral("pull", f"{registry.host}/nobody/nothing")
    assert_one_line_error(result, 3)
    result = corral("run", f"{registry.host}/nobody/nothing", "Hi")
    assert_one_line_error(result, 3)  # one line: nothing was announced as pulling
    assert "not in the catalog" in result.err


def test_pull_of_a_present_model_downloads_nothing(corral, registry, tmp_path):
    ref = f"{registry.host}/present/tiny"
    gguf = tiny_gguf(tmp_path, seed=3)
    push_with_oras(registry.host, "present/tiny", [(gguf, GGUF)], dmr_config(), CONFIG)
    assert corral("pull", ref).code == 0
    sent = registry.blob_bytes_sent(sha256(gguf))
    assert sent == gguf.stat().st_size
    again = corral("pull", ref)
    assert again.code == 0, again
    assert "already up to date" in again.out
    assert registry.blob_bytes_sent(sha256(gguf)) == sent


def test_pull_by_digest_and_tag_and_rm(corral, registry, tmp_path):
    gguf = tiny_gguf(tmp_path, seed=4)
    push_with_oras(registry.host, "digest/tiny", [(gguf, GGUF)], dmr_config(), CONFIG)
    digest = "sha256:" + hashlib.sha256(registry_manifest(registry, "digest/tiny")).hexdigest()
    by_digest = f"{registry.host}/digest/tiny@{digest}"
    assert corral("pull", by_digest).code == 0
    assert listed(corral)[by_digest]["id"] == digest

    assert corral("tag", by_digest, "mine/tiny:v1").code == 0
    rows = listed(corral)
    assert rows["mine/tiny:v1"]["id"] == digest
    quiet = corral("list", "-q")
    assert digest[7:19] in quiet.out.split()

    # two names: removing one keeps the files; by id it takes --force
    assert corral("rm", "mine/tiny:v1").out.strip() == "Untagged: mine/tiny:v1"
    assert corral("tag", by_digest, "mine/tiny:v1").code == 0
    assert_one_line_error(corral("rm", digest[7:19]), 2)
    removed = corral("rm", "--force", digest[7:19])
    assert removed.code == 0 and f"Deleted: {digest}" in removed.out
    assert by_digest not in listed(corral) and "mine/tiny:v1" not in listed(corral)
    usage = json.loads(corral("df", "--json").out)
    assert usage["models"] == 0 and usage["models_bytes"] == 0


def test_cncf_model_spec_weights(corral, registry, tmp_path):
    gguf = tiny_gguf(tmp_path, seed=5)
    config = {"descriptor": {"createdAt": "2025-06-01T12:00:00Z", "name": "tiny"},
              "config": {"architecture": "llama", "format": "gguf", "paramSize": "120k"},
              "modelfs": {"type": "layers", "diffIds": [sha256(gguf)]}}
    push_with_oras(registry.host, "cncf/tiny", [(gguf, "application/vnd.cncf.model.weight.v1.raw")], config,
                   "application/vnd.cncf.model.config.v1+json")
    ref = f"{registry.host}/cncf/tiny"
    assert corral("pull", ref).code == 0
    row = listed(corral)[ref]
    assert row["parameters"] == "120k" and Path(row["path"]).read_bytes() == gguf.read_bytes()


def test_not_a_model_is_refused_before_download(corral, registry, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 1000)
    push_with_oras(registry.host, "plain/artifact", [(data, "application/octet-stream")], {}, "application/json")
    result = corral("pull", f"{registry.host}/plain/artifact")
    assert_one_line_error(result, 1)
    assert "not a model artifact" in result.err
    assert registry.blob_bytes_sent(sha256(data)) == 0


def test_two_pulls_at_once_download_each_blob_once(corral, registry, tmp_path, corral_home):
    gguf = tiny_gguf(tmp_path, seed=6, n_embd=256)  # a few MB
    push_with_oras(registry.host, "shared/tiny", [(gguf, GGUF)], dmr_config(), CONFIG)
    proxy = StallingProxy(registry.port, budget=gguf.stat().st_size // 2)
    ref = f"{proxy.host}/shared/tiny"
    try:
        first = subprocess.Popen([CORRAL, "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        partial = corral_home / "models" / "incoming" / f"{sha256(gguf)[7:]}.partial"
        from conftest import wait_for

        wait_for(lambda: partial.exists() and partial.stat().st_size > 0)
        # the second goes straight to the registry: the proxy holds every response now
        second = subprocess.Popen([CORRAL, "pull", f"{registry.host}/shared/tiny"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: b"waiting for another pull" in _stderr_so_far(second), timeout=60)
        proxy.release()
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        proxy.close()
    assert first.returncode == 0 and second.returncode == 0, outs
    assert registry.blob_bytes_sent(sha256(gguf)) == gguf.stat().st_size


def _stderr_so_far(proc: subprocess.Popen) -> bytes:
    """What a running process has written to its stderr pipe (non-blocking)."""
    import os
    import select

    fd = proc.stderr.fileno()
    chunks = getattr(proc, "_seen", b"")
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks += data
    proc._seen = chunks
    return chunks


def test_gateway_pull_events_stream_progress_then_success(registry, tmp_path, corral_home):
    """What the gateway streams for POST /api/pull, from an asyncio loop."""
    import asyncio

    from corral.configs.settings import load_settings
    from corral.store import api
    from corral.supervisor.errors import ModelNotFound

    gguf = tiny_gguf(tmp_path, seed=7)
    push_with_oras(registry.host, "events/tiny", [(gguf, GGUF)], dmr_config(), CONFIG)

    async def collect(ref: str) -> list[dict]:
        return [event async for event in api.pull_events(ref, load_settings())]

    events = asyncio.run(collect(f"{registry.host}/events/tiny"))
    layer = [e for e in events if e.get("digest") == sha256(gguf)]
    assert layer and layer[-1]["completed"] == layer[-1]["total"] == gguf.stat().st_size
    assert events[-1]["status"] == "success"
    shown = asyncio.run(api.show_model(load_settings(), f"{registry.host}/events/tiny"))
    assert shown["architecture"] == "llama" and shown["id"] == events[-1]["digest"]
    with pytest.raises(ModelNotFound):
        asyncio.run(collect(f"{registry.host}/events/missing"))
