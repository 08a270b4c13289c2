"""Hugging Face pulls. The Hub cannot be reached here, so the test's stand-in
is a local HTTP server answering the routes huggingface_hub calls (the repo
tree listing, with each LFS file's sha256, and ``resolve`` downloads with
Range), reached through HF_ENDPOINT; HF_TOKEN must arrive as a bearer token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from registry import QuietHandler, send_range, serve, tiny_gguf

pytestmark = pytest.mark.integration

TOKEN = "hf_test_token"


class HubStandIn(QuietHandler):
    files: dict[str, bytes] = {}  # path in the repo -> bytes
    repo = "TestOrg/Tiny-GGUF"
    seen: list[tuple[str, str, str | None]] = []  # (method, path, authorization)

    def _tree(self) -> None:
        entries = [{"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path,
                    "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
                   for path, data in self.files.items()]
        entries.append({"type": "file", "oid": "0" * 40, "size": 12, "path": "README.md"})
        self.send(200, json.dumps(entries).encode(), "application/json")

    def _resolve(self, path: str) -> None:
        data = self.files.get(path)
        if data is None:
            self.send(404, b'{"error": "Entry not found"}', "application/json")
            return
        _, body = send_range(self, data)
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        HubStandIn.seen.append(("GET", self.path, self.headers.get("Authorization")))
        path = self.path.split("?", 1)[0]
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send(401, b'{"error": "Invalid credentials"}', "application/json")
        elif path == f"/api/models/{self.repo}/tree/main":
            self._tree()
        elif path.startswith(f"/{self.repo}/resolve/main/"):
            self._resolve(path[len(f"/{self.repo}/resolve/main/"):])
        elif path.startswith("/api/models/"):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        else:
            self.send(404, b"{}", "application/json")


@pytest.fixture
def hub(tmp_path):
    q8 = tiny_gguf(tmp_path, seed=31).read_bytes()
    q4 = tiny_gguf(tmp_path, seed=32).read_bytes()
    HubStandIn.files = {"tiny.Q8_0.gguf": q8, "sub/tiny.Q4_K_M.gguf": q4}
    HubStandIn.seen = []
    server = serve(HubStandIn)
    yield {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    server.shutdown()


def rows(corral) -> dict[str, dict]:
    return {row["model"]: row for row in json.loads(corral("list", "--json").out)}


def test_pull_takes_q4_k_m_by_default_and_runs(corral, hub):
    result = corral("pull", "hf.co/TestOrg/Tiny-GGUF", env=hub)
    assert result.code == 0, result
    row = rows(corral)["huggingface.co/testorg/tiny-gguf"]
    assert Path(row["path"]).read_bytes() == HubStandIn.files["sub/tiny.Q4_K_M.gguf"]
    assert row["architecture"] == "llama" and row["quantization"] == "F32"
    repo_requests = [(p, auth) for _, p, auth in HubStandIn.seen if "Tiny-GGUF" in p]
    assert len(repo_requests) == 2 and all(auth == f"Bearer {TOKEN}" for _, auth in repo_requests), HubStandIn.seen
    answer = corral("run", "hf.co/TestOrg/Tiny-GGUF", "Hi", "--max-tokens", "3", env=hub)
    assert answer.code == 0, answer


def test_pull_a_named_quantization(corral, hub):
    result = corral("pull", "hf.co/TestOrg/Tiny-GGUF:Q8_0", env=hub)
    assert result.code == 0, result
    row = rows(corral)["huggingface.co/testorg/tiny-gguf:Q8_0"]
    assert Path(row["path"]).read_bytes() == HubStandIn.files["tiny.Q8_0.gguf"]
    again = corral("pull", "hf.co/TestOrg/Tiny-GGUF:Q8_0", env=hub)
    assert "already up to date" in again.out
    downloads = [p for m, p, _ in HubStandIn.seen if "/resolve/" in p]
    assert len(downloads) == 1


def test_missing_quantization_and_repository(corral, hub):
    result = corral("pull", "hf.co/TestOrg/Tiny-GGUF:Q2_K", env=hub)
    assert_one_line_error(result, 3)
    assert "no GGUF file for Q2_K" in result.err
    result = corral("pull", "hf.co/TestOrg/Nothing", env=hub)
    assert_one_line_error(result, 3)


def test_a_file_that_does_not_match_its_sha256_is_refused(corral, hub, tmp_path):
    listed = HubStandIn.files["sub/tiny.Q4_K_M.gguf"]
    HubStandIn.files["sub/tiny.Q4_K_M.gguf"] = listed  # the listing's sha256 ...

    class Tampered(dict):
        def get(self, key, default=None):  # ... but other bytes served
            data = dict.get(self, key, default)
            return data[:-1] + bytes([data[-1] ^ 1]) if data is not None else None

    HubStandIn.files = Tampered(HubStandIn.files)
    result = corral("pull", "-q", "hf.co/TestOrg/Tiny-GGUF", env=hub)
    assert_one_line_error(result, 1)
    assert "corrupt" in result.err
    assert "huggingface.co/testorg/tiny-gguf" not in rows(corral)
