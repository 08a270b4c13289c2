"""The store's fault tests: a pull killed half-way resumes, a corrupt blob is
refused, a registry's digest never becomes a path, the memory check refuses
what cannot fit, and a loaded model is not removed without --force."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import CORRAL, assert_one_line_error, wait_for
from registry import (  # noqa: F401
    QuietHandler, StallingProxy, dmr_config, own_registry, push_with_oras, registry, serve, tiny_gguf,
)

pytestmark = pytest.mark.integration

GGUF = "application/vnd.docker.ai.gguf.v3"
CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
CHUNK = 1024 * 1024  # corral's read size


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def names(corral) -> set[str]:
    return {row["model"] for row in json.loads(corral("list", "--json").out)}


def test_kill_9_half_way_then_resume(corral, registry, tmp_path, corral_home):
    gguf = tiny_gguf(tmp_path, seed=21, n_embd=256)
    size = gguf.stat().st_size
    digest = sha256(gguf.read_bytes())
    push_with_oras(registry.host, "resume/tiny", [(gguf, GGUF)], dmr_config(256), CONFIG)
    proxy = StallingProxy(registry.port, budget=size // 2)
    ref = f"{proxy.host}/resume/tiny"
    partial = corral_home / "models" / "incoming" / f"{digest[7:]}.partial"
    try:
        pull = subprocess.Popen([CORRAL, "pull", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the proxy holds everything past half: wait until it does, with a chunk on disk
        wait_for(lambda: proxy.sent >= proxy.budget and partial.exists() and partial.stat().st_size >= CHUNK,
                 timeout=60)
        pull.send_signal(signal.SIGKILL)
        pull.wait()
        kept = partial.stat().st_size
        assert 0 < kept < size
        assert ref not in names(corral)  # nothing under the name yet
        before = len(registry.requests())
        proxy.release()
        again = corral("pull", ref)
        assert again.code == 0, again
    finally:
        proxy.close()
    resumed = sum(int(e.get("http.response.written", 0)) for e in registry.requests()[before:]
                  if e.get("http.request.uri", "").endswith(f"/blobs/{digest}"))
    assert 0 < resumed < (size - kept) + CHUNK
    assert not partial.exists()
    answer = corral("run", ref, "Hi", "--max-tokens", "4")
    assert answer.code == 0, answer


def test_corrupt_blob_is_refused_and_nothing_is_named(corral, own_registry, tmp_path, corral_home):
    gguf = tiny_gguf(tmp_path, seed=22)
    data = gguf.read_bytes()
    push_with_oras(own_registry.host, "bad/tiny", [(gguf, GGUF)], dmr_config(), CONFIG)
    stored = own_registry.blob_file(sha256(data))
    corrupt = bytearray(stored.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF  # same size, one byte changed
    stored.write_bytes(bytes(corrupt))
    ref = f"{own_registry.host}/bad/tiny"
    result = corral("pull", "--quiet", ref, "--ignore-runtime-memory-check")
    assert_one_line_error(result, 1)
    assert "corrupt" in result.err and "nothing was stored" in result.err
    assert ref not in names(corral)
    models = corral_home / "models"
    assert not (models / "blobs" / "sha256" / sha256(data)[7:]).exists()
    assert not list((models / "incoming").glob("*.partial"))


class HostileRegistry(QuietHandler):
    """A registry that serves a manifest whose layer digest is a path."""

    manifest = b""
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        HostileRegistry.requests.append(self.path)
        if self.path == "/v2/":
            body, ctype = b"{}", "application/json"
        elif self.path.endswith("/manifests/latest"):
            body, ctype = self.manifest, "application/vnd.oci.image.manifest.v1+json"
        else:
            body, ctype = b"x" * 64, "application/octet-stream"
        self.send(200, body, ctype)


@pytest.mark.parametrize("where", ["layer", "config"])
def test_a_digest_that_is_a_path_is_refused(corral, corral_home, where):
    good = {"mediaType": CONFIG, "digest": sha256(b"{}"), "size": 2}
    evil = {"mediaType": GGUF, "digest": "sha256:../../x", "size": 64}
    if where == "config":
        good, evil = {**evil, "mediaType": CONFIG}, {**good, "mediaType": GGUF}
    HostileRegistry.manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           "config": good, "layers": [evil]}).encode()
    HostileRegistry.requests = []
    server = serve(HostileRegistry)
    store = corral_home / "a" / "b" / "models"
    store.parent.mkdir(parents=True)  # "../../x" from blobs/sha256/ would land in a/b/models or above
    before = sorted(p for p in Path(corral_home).rglob("*"))
    try:
        result = corral("pull", f"localhost:{server.server_port}/evil/model", env={"CORRAL_MODELS": str(store)})
    finally:
        server.shutdown()
    assert_one_line_error(result, 1)
    assert "invalid digest" in result.err
    assert not any("blobs" in p for p in HostileRegistry.requests)  # refused before any download
    written = sorted(p for p in Path(corral_home).rglob("*"))
    assert not [p for p in written if p not in before and store not in p.parents and p != store]
    assert not list(Path(corral_home).rglob("x"))


def test_memory_check_refuses_with_exit_4_and_the_flag_lets_it_through(corral, registry, tmp_path, corral_home):
    gguf = tiny_gguf(tmp_path, seed=23, n_embd=256)  # larger than the 4 MiB the header read asks for
    push_with_oras(registry.host, "memory/tiny", [(gguf, GGUF)], dmr_config(256), CONFIG)
    ref = f"{registry.host}/memory/tiny"
    refused = corral("pull", "-q", ref, env={"CORRAL_MEMORY_BUDGET": "1MiB"})
    assert_one_line_error(refused, 4)
    assert "needs about" in refused.err and "1.0 MiB" in refused.err and "--ignore-runtime-memory-check" in refused.err
    assert ref not in names(corral)
    # the header was read with a Range request before the weights, not the whole file
    reads = [e for e in registry.requests() if e.get("http.request.uri", "").endswith(sha256(gguf.read_bytes()))
             and e.get("http.request.method") == "GET"]
    assert [e["http.response.status"] for e in reads] == [206]
    assert int(reads[0]["http.response.written"]) < gguf.stat().st_size

    allowed = corral("pull", ref, "--ignore-runtime-memory-check", env={"CORRAL_MEMORY_BUDGET": "1MiB"})
    assert allowed.code == 0, allowed
    assert ref in names(corral)


def test_rm_of_a_loaded_model_needs_force(corral, registry, tmp_path):
    gguf = tiny_gguf(tmp_path, seed=24)
    push_with_oras(registry.host, "loaded/tiny", [(gguf, GGUF)], dmr_config(256), CONFIG)
    ref = f"{registry.host}/loaded/tiny"
    assert corral("pull", ref).code == 0
    assert corral("run", "-d", ref).code == 0
    refused = corral("rm", ref)
    assert_one_line_error(refused, 1)
    assert "--force" in refused.err
    assert ref in names(corral)
    assert [m["model"] for m in json.loads(corral("ps", "--json").out)] == [ref]

    forced = corral("rm", "--force", ref)
    assert forced.code == 0, forced
    assert ref not in names(corral)
    assert json.loads(corral("ps", "--json").out) == []


def test_bad_references_are_usage_errors(corral):
    result = corral("pull", "ai/smollm2@sha256:../../etc")
    assert_one_line_error(result, 2)
    result = corral("pull", "hf.co/only-one-part")
    assert_one_line_error(result, 2)


def test_unreachable_registry_is_one_line(corral):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    result = corral("pull", f"localhost:{port}/no/registry")
    assert_one_line_error(result, 1)
    assert "cannot reach" in result.err
    assert os.environ.get("CORRAL_MODELS") is None
