"""Every network and disk failure of the store is one line with what to do,
within a bounded time, and retried where that makes sense: a registry that
drops the connection mid-blob or stalls with it open, one that answers
401/403/404/500, a host that does not resolve or refuses, a TLS handshake
that fails, Hugging Face unreachable, a disk that fills during a pull or a
package. Real processes throughout: the `corral` command against servers on
loopback, and a real tmpfs for the full disk."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import CORRAL, assert_one_line_error, wait_for
from registry import FaultyRegistry, QuietHandler, faulty_registry, serve, tiny_gguf
from small_disk import fill, small_disk

pytestmark = pytest.mark.integration

FAST = {"CORRAL_STALL_TIMEOUT": "1s"}


@pytest.fixture
def model(tmp_path):
    """A registry serving one tiny model (5.6 MiB), and its reference."""
    gguf = tiny_gguf(tmp_path, seed=41, n_embd=256)
    server, digest = faulty_registry(gguf)
    yield {"ref": f"localhost:{server.server_port}/faulty/tiny", "digest": digest, "size": gguf.stat().st_size,
           "host": f"localhost:{server.server_port}", "file": gguf}
    FaultyRegistry.stall = False
    FaultyRegistry.release.set()
    server.shutdown()


def partial_file(corral_home, digest):
    return corral_home / "models" / "incoming" / f"{digest[7:]}.partial"


def test_a_dropped_connection_is_resumed_by_itself(corral, model):
    FaultyRegistry.drops = 2
    result = corral("pull", "-q", model["ref"], "--ignore-runtime-memory-check", env=FAST)
    assert result.code == 0, result
    assert "Traceback" not in result.err
    # three transfers of the blob: the first from 0, the next two from where each stopped
    assert FaultyRegistry.blob_gets[0] is None
    assert [r.startswith("bytes=") and not r.startswith("bytes=0-") for r in FaultyRegistry.blob_gets[1:]] == [True, True]
    assert corral("run", model["ref"], "Hi", "--max-tokens", "2").code == 0


def test_a_registry_that_keeps_dropping_is_one_line_and_resumes_later(corral, model, corral_home):
    FaultyRegistry.drops = 100
    result = corral("pull", "-q", model["ref"], "--ignore-runtime-memory-check", env=FAST)
    assert_one_line_error(result, 1)
    assert model["host"] in result.err and "dropped the connection" in result.err
    assert "run the same command again to resume" in result.err
    kept = partial_file(corral_home, model["digest"]).stat().st_size
    assert 0 < kept < model["size"]
    FaultyRegistry.drops, FaultyRegistry.blob_gets = 0, []
    again = corral("pull", "-q", model["ref"], "--ignore-runtime-memory-check")
    assert again.code == 0, again
    assert FaultyRegistry.blob_gets == [f"bytes={kept}-"]


def test_a_stalled_transfer_is_noticed_and_named(corral, model):
    FaultyRegistry.stall = True
    result = corral("pull", "-q", model["ref"], "--ignore-runtime-memory-check", env=FAST)
    assert_one_line_error(result, 1)
    assert "stopped sending for 1 s" in result.err and "4 tries" in result.err
    assert model["host"] in result.err and "run the same command again to resume" in result.err


@pytest.mark.parametrize("status, code, words", [
    (401, 1, "denied access"), (403, 1, "denied access"), (404, 3, "was not found"), (500, 1, "answered 500"),
])
def test_registry_statuses_are_one_line(corral, model, status, code, words):
    FaultyRegistry.status = status
    result = corral("pull", "-q", model["ref"])
    assert_one_line_error(result, code)
    assert words in result.err and model["host"] in result.err


def test_a_name_that_does_not_resolve_is_one_line(corral):
    result = corral("pull", "-q", "registry.invalid/team/model")
    assert_one_line_error(result, 1)
    assert "registry.invalid" in result.err and "DNS" in result.err


def test_a_push_whose_upload_is_dropped_is_one_line(corral, model, tmp_path):
    assert corral("package", "--gguf", str(model["file"]), f"{model['host']}/pushed/tiny:v1").code == 0
    FaultyRegistry.upload_drop = True
    result = corral("push", "-q", f"{model['host']}/pushed/tiny:v1", env=FAST)
    assert_one_line_error(result, 1)
    assert model["host"] in result.err


def test_free_space_is_checked_before_downloading(corral, model, tmp_path):
    with small_disk(tmp_path / "disk", "4m") as disk:
        result = corral("pull", "-q", model["ref"], "--ignore-runtime-memory-check", env={"CORRAL_MODELS": str(disk)})
        assert_one_line_error(result, 1)
        assert "needs 5.6 MiB" in result.err and "free" in result.err and "corral rm --partials" in result.err
        assert FaultyRegistry.blob_gets == []  # nothing was downloaded


def test_a_disk_that_fills_mid_pull_is_one_line_and_partials_can_be_dropped(corral, model, tmp_path):
    FaultyRegistry.stall = True  # half the blob, then hold it until the disk is full
    with small_disk(tmp_path / "disk", "8m") as disk:
        env = {"CORRAL_MODELS": str(disk), "CORRAL_STALL_TIMEOUT": "60s"}
        pull = subprocess.Popen([CORRAL, "pull", "-q", model["ref"], "--ignore-runtime-memory-check"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**__import__("os").environ, **env})
        partial = disk / "incoming" / f"{model['digest'][7:]}.partial"
        wait_for(lambda: partial.exists() and partial.stat().st_size >= model["size"] // 2, timeout=60)
        filler = fill(disk)
        FaultyRegistry.stall = False
        FaultyRegistry.release.set()  # the rest of the blob arrives: it cannot be written
        _, err = pull.communicate(timeout=120)
        assert pull.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
        assert "is full: free" in err and "pull again to resume" in err and "corral rm --partials" in err
        filler.unlink()
        df = json.loads(corral("df", "--json", env=env).out)
        assert df["incomplete_bytes"] > 0
        dropped = corral("rm", "--partials", env=env)
        assert dropped.code == 0 and "Removed 1 unfinished download" in dropped.out, dropped
        assert json.loads(corral("df", "--json", env=env).out)["incomplete_bytes"] == 0


def test_a_disk_that_fills_during_package_is_one_line(corral, tmp_path):
    gguf = tiny_gguf(tmp_path, seed=42, n_embd=256)
    with small_disk(tmp_path / "disk", "1m") as disk:
        result = corral("package", "--gguf", str(gguf), "localhost:5000/big/tiny:v1", env={"CORRAL_MODELS": str(disk)})
        assert_one_line_error(result, 1)
        assert "needs 5.6 MiB" in result.err and "package again" in result.err
        assert not list((disk / "incoming").glob("*.partial"))  # the copy's temporary file is gone


class PlainHTTP(QuietHandler):
    def do_GET(self):  # noqa: N802
        self.send(200, b"[]", "application/json")


@pytest.mark.parametrize("endpoint, words", [
    ("http://127.0.0.1:{closed}", "refused the connection"),
    ("http://hub.invalid", "DNS"),
    ("https://127.0.0.1:{plain}", "TLS handshake failed"),
])
def test_hugging_face_unreachable_is_one_line(corral, endpoint, words):
    server = serve(PlainHTTP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    try:
        url = endpoint.format(closed=closed, plain=server.server_port)
        result = corral("pull", "-q", "hf.co/TestOrg/Tiny-GGUF", env={"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0"})
    finally:
        server.shutdown()
    assert_one_line_error(result, 1)
    assert words in result.err, result.err


def test_a_supervisor_that_cannot_start_on_a_full_disk_says_why(corral, tmp_path):
    with small_disk(tmp_path / "home", "256k") as home:
        filler = fill(home)
        result = corral("run", "corral/echo", "Hi", env={"CORRAL_HOME": str(home), "CORRAL_ENABLE_ECHO_BACKEND": "1"})
        assert_one_line_error(result, 6)
        assert "cannot start" in result.err and "disk holding the corral home is full" in result.err
        filler.unlink()  # with room again, the same command works
        again = corral("run", "corral/echo", "Hi", env={"CORRAL_HOME": str(home), "CORRAL_ENABLE_ECHO_BACKEND": "1"})
        assert again.code == 0, again
        corral("stop", env={"CORRAL_HOME": str(home)})
