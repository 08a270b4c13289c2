"""No input takes the supervisor down: each reproduction from the hardening
issue against a real supervisor process, and random and mutated frames on
both of its sockets, with a status request after every batch that the same
supervisor pid must answer."""

from __future__ import annotations

import os

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import assert_one_line_error
from corral.client import Client
from corral.client.launch import ensure_supervisor
from corral.configs.settings import load_settings
from corral.supervisor import protocol
from hostile_files import U32, gguf_header, llama_kv, write

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "60"))


def status(sock: zmq.Socket, tag: str = "probe") -> dict:
    sock.send(protocol.request(protocol.STATUS, tag))
    while sock.poll(20000):
        msg = msgpack.unpackb(sock.recv(), raw=False)
        if msg.get("id") == tag:
            return msg["result"]
    raise AssertionError("the supervisor did not answer status")


@pytest.fixture
def supervisor(tiny_catalog):
    """A running supervisor with the tiny llama loaded, and a raw socket to it."""
    settings = load_settings()
    pid = ensure_supervisor(settings)
    with Client(settings) as client:
        client.load(tiny_catalog["llama"])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(settings.endpoint)
    yield settings, pid, sock
    sock.close(0)
    ctx.term()


def test_a_frame_of_empty_maps_costs_the_supervisor_nothing(supervisor):
    settings, pid, sock = supervisor
    before = psutil.Process(pid).memory_info().rss
    junk = msgpack.packb({"v": 1, "id": 1, "op": "chat", "model": "m", "messages": [{}] * (protocol.MAX_FRAME_BYTES - 100)})
    sock.send(junk)
    assert status(sock)["pid"] == pid
    grown = psutil.Process(pid).memory_info().rss - before
    assert grown < 64 * 2**20, f"the supervisor grew by {grown / 2**20:.0f} MiB"  # it once grew by 1,164 MiB


def test_bad_catalog_entries_are_errors_not_crashes(corral, tiny_catalog, corral_home):
    with open(corral_home / "models.toml", "a") as f:
        f.write('\n[models."bad/path"]\npath = 42\n\n[models."bad/context"]\npath = "/etc/hostname"\ncontext_length = "big"\n')
    listed = corral("list")
    assert listed.code == 0 and "Traceback" not in listed.err, listed
    assert "bad/path" in listed.out and "bad/context" in listed.out
    with Client() as client:
        pid = client.status()["pid"]
        stream = client.generate(tiny_catalog["llama"], "hello", max_tokens=20)  # another client's stream
        for name in ("bad/path", "bad/context"):
            result = corral("run", name, "hi")
            assert_one_line_error(result, 2)
            assert name in result.err
        assert stream.text() and stream.stopped in ("stop", "length")
        assert client.status()["pid"] == pid


def test_alignment_zero_and_other_lies_are_refused_and_the_supervisor_serves_on(corral, supervisor, tmp_path):
    settings, pid, sock = supervisor
    for name, data in {
        "align0.gguf": gguf_header(llama_kv(general__alignment=(U32, 0))),
        "many.gguf": gguf_header(llama_kv(), n_tensors=2**60),
    }.items():
        result = corral("run", str(write(tmp_path / name, data)), "hi")
        assert_one_line_error(result, 1)
        assert "not a valid model file" in result.err
    assert status(sock)["pid"] == pid


def test_a_truncated_model_is_refused_before_a_worker_starts(corral, tiny_files, tmp_path):
    data = tiny_files["llama"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    result = corral("run", str(cut), "hi")
    assert_one_line_error(result, 1)
    assert f"truncated: {len(data) // 2} of {len(data)} bytes" in result.err
    assert not list(load_settings().log_dir.glob("worker-*cut*"))  # no worker was started for it


def test_bad_settings_are_one_line_errors(corral, tmp_path):
    loud = corral("run", "ai/smollm2", "hi", env={"CORRAL_LOG_LEVEL": "loud"})
    assert_one_line_error(loud, 2)
    assert "log_level" in loud.err
    none = corral("run", "ai/smollm2", "hi", env={"CORRAL_MAX_QUEUE": "0"})
    assert_one_line_error(none, 2)
    config = tmp_path / "corral.toml"
    config.write_text('log_level = "debug"\nidle_timeout = "1s"\n')
    assert load_settings({"CORRAL_CONFIG": str(config)}).log_level == "debug"


def test_a_home_corral_did_not_make_is_never_chmod_ed(corral, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    result = corral("status", env={"CORRAL_HOME": str(shared)})
    assert result.code == 6  # no supervisor there; and the folder is left as it was
    assert oct(shared.stat().st_mode & 0o777) == oct(0o755)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    refused = corral("run", "ai/smollm2", "hi", env={"CORRAL_HOME": str(open_to_all)})
    assert_one_line_error(refused, 6)
    assert "writable by other users" in refused.err
    assert oct(open_to_all.stat().st_mode & 0o777) == oct(0o777)
    fresh = tmp_path / "new" / "home"
    ok = corral("run", "-d", "ai/smollm2", env={"CORRAL_HOME": str(fresh)})
    assert ok.code == 0, ok
    assert oct(fresh.stat().st_mode & 0o777) == oct(0o700)
    corral("stop", env={"CORRAL_HOME": str(fresh)})


def test_worker_spec_and_preload_are_not_on_the_command_line(tiny_catalog):
    settings = load_settings()
    with Client(settings, preload={"model": tiny_catalog["llama"]}) as client:
        client.load(tiny_catalog["llama"])
        pids = [client.status()["pid"], *(m["pid"] for m in client.ps())]
    for pid in pids:
        cmdline = " ".join(psutil.Process(pid).cmdline())
        assert tiny_catalog["llama"] not in cmdline and "tiny-llama.gguf" not in cmdline, cmdline


# -- fuzzing both sockets of a live supervisor ----------------------------------

VALID = [
    protocol.request("generate", 1, model="test/tiny-llama", prompt="hi", options={"max_tokens": 2}),
    protocol.request("chat", "c", model="test/tiny-llama", messages=[{"role": "user", "content": "hi"}]),
    protocol.request("ps", 2),
    protocol.request("cancel", 1),
    protocol.event("token", rid=1, id=1, text="x"),
    protocol.event("done", rid=1, id=1, stopped="stop"),
    protocol.event("ready", pid=1, load_ms=1.0, context_length=256),
    protocol.event("embedding", rid=1, id=1, index=0, vector=b"\0\0\0\0"),
]


def _mutate(data, frame: bytes) -> bytes:
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf)


@pytest.fixture
def tally():
    """What the fuzzing sent, printed for the record (`pytest -s`)."""
    counts = {"examples": 0, "frames": 0, "to_worker_socket": 0}
    yield counts
    print(f"\nfuzz: {counts['examples']} examples, {counts['frames']} frames sent "
          f"({counts['to_worker_socket']} as the worker), the supervisor answered status after each")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_and_mutated_frames_on_both_sockets(supervisor, tally, data):
    settings, pid, sock = supervisor
    # Impersonate the loaded worker's data socket: frames from it are parsed
    # as worker events (a stranger's are dropped unread).
    worker = zmq.Context.instance().socket(zmq.DEALER)
    worker.setsockopt(zmq.IDENTITY, f"w{pid}-1".encode() + protocol.WORKER_DATA_SUFFIX)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(settings.workers_endpoint)
    try:
        frames = data.draw(st.lists(st.binary(max_size=64) | st.sampled_from(VALID).map(lambda f: _mutate(data, f)),
                                    min_size=1, max_size=12))
        for frame in frames:
            as_worker = data.draw(st.booleans())
            (worker if as_worker else sock).send(frame)
            tally["to_worker_socket"] += as_worker
        tally["frames"] += len(frames)
        tally["examples"] += 1
        assert status(sock, "after")["pid"] == pid
    finally:
        worker.close(0)
    assert psutil.Process(pid).is_running()
