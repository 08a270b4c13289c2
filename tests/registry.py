"""A real OCI registry for the tests: Debian's ``docker-registry`` (the CNCF
Distribution registry) on a free loopback port, with a temporary storage
folder and config file, stopped afterwards. A missing binary fails the
suite; it is never a skip.

The registry logs each request as a JSON line with the bytes it wrote, which
is how the tests count what a pull really downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

BINARY_CANDIDATES = ("/usr/bin/docker-registry", "docker-registry", "registry")


def registry_binary() -> str:
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise AssertionError(
        "the docker-registry binary is missing: install Debian's docker-registry package "
        "(apt-get install docker-registry; `dpkg -L docker-registry` lists it)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """\
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Registry:
    folder: Path
    port: int
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.folder / "registry.log"

    @property
    def host(self) -> str:
        """As a user writes it in a reference: ``localhost:PORT``."""
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"

    def start(self) -> "Registry":
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(CONFIG.format(storage=self.storage, port=self.port))
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([registry_binary(), "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"docker-registry exited: {self.log_path.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("docker-registry did not answer within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def requests(self) -> list[dict]:
        """Every request the registry has answered, as its log records them."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "http.response.status" in entry:
                out.append(entry)
        return out

    def blob_bytes_sent(self, digest: str) -> int:
        """The bytes of ``digest`` the registry has sent, over all requests."""
        return sum(
            int(e.get("http.response.written", 0))
            for e in self.requests()
            if e.get("http.request.method") == "GET" and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
        )

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to corrupt it on purpose)."""
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def start_registry() -> Registry:
    folder = Path(tempfile.mkdtemp(prefix="corral-registry-", dir="/tmp"))
    return Registry(folder, free_port()).start()


@pytest.fixture(scope="session")
def registry():
    reg = start_registry()
    yield reg
    reg.stop()
    shutil.rmtree(reg.folder, ignore_errors=True)


@pytest.fixture
def own_registry():
    """A registry for one test (one that corrupts what it stores)."""
    reg = start_registry()
    yield reg
    reg.stop()
    shutil.rmtree(reg.folder, ignore_errors=True)


def tiny_gguf(folder: Path, seed: int = 0, **dims) -> Path:
    from tiny_models import write_tiny_llama_gguf

    return write_tiny_llama_gguf(folder / f"tiny-{seed}.gguf", seed=seed, **dims)


class StallingProxy:
    """A TCP proxy in front of the registry that forwards at most ``budget``
    bytes of responses, then holds the rest until :meth:`release`: a pull
    that stops half-way, at a known point, without sleeping."""

    def __init__(self, upstream_port: int, budget: int | None = None):
        self.upstream_port = upstream_port
        self.budget = budget
        self.sent = 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def release(self) -> None:
        self.budget = None
        self.released.set()

    def close(self) -> None:
        self.closed = True
        self.released.set()
        self.server.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _allow(self, n: int) -> int:
        """How many of ``n`` response bytes may pass now (waits at the budget)."""
        while True:
            with self.lock:
                if self.budget is None:
                    self.sent += n
                    return n
                left = self.budget - self.sent
                if left > 0:
                    take = min(left, n)
                    self.sent += take
                    return take
            self.released.wait()

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        try:
            while data := src.recv(65536):
                while data:
                    n = self._allow(len(data)) if response else len(data)
                    dst.sendall(data[:n])
                    data = data[n:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def push_with_oras(registry_host: str, repository: str, files: list[tuple[Path, str]], config: dict,
                   config_media_type: str, tag: str = "latest") -> None:
    """Push files as an artifact with the oras SDK, media types written by
    hand: an independent client, so corral is not tested only against itself."""
    import oras.client

    folder = Path(tempfile.mkdtemp(prefix="oras-", dir="/tmp"))
    try:
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(config))
        client = oras.client.OrasClient(hostname=registry_host, insecure=True)
        client.push(
            target=f"{registry_host}/{repository}:{tag}",
            files=[f"{path}:{media_type}" for path, media_type in files],
            manifest_config=f"{config_path}:{config_media_type}",
            disable_path_validation=True,
            quiet=True,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dmr_config(context_size: int | None = None) -> dict:
    """A config as Docker Model Runner writes it for a GGUF model."""
    config = {"format": "gguf", "quantization": "F32", "parameters": "119.74 K", "architecture": "llama",
              "size": "477 KiB"}
    if context_size:
        config["context_size"] = context_size
    return {"config": config, "descriptor": {"created": "2025-06-01T12:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": []}}


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for the tests' stand-in servers: no access log."""

    def send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Run ``handler`` on a free loopback port in a thread; ``.shutdown()`` stops it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class EmptyRegistry(QuietHandler):
    """A registry that answers, and holds no models: every manifest is a 404."""

    def do_GET(self):  # noqa: N802
        if self.path == "/v2/":
            return self.send(200, b"{}", "application/json")
        self.send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', "application/json")

    do_HEAD = do_GET


@pytest.fixture
def missing_model():
    """A reference to a model that a reachable registry says it does not
    have: what "unknown model" means to a user (a bare ``no/such`` would be
    looked up on docker.io, and this machine has no network: a 502)."""
    server = serve(EmptyRegistry)
    yield f"localhost:{server.server_port}/nobody/nothing"
    server.shutdown()


def send_range(handler: BaseHTTPRequestHandler, data: bytes) -> tuple[int, bytes]:
    """Answer the request's Range header over ``data`` (206, or 200 without
    one): the status and headers are sent; returns where the body starts
    and the body to write."""
    start = 0
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range", ""))
    if match:
        start = int(match[1])
        end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        body = data[start:end + 1]
    else:
        handler.send_response(200)
        body = data
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    return start, body


class FaultyRegistry(QuietHandler):
    """An OCI registry in memory that fails on purpose, for one test at a
    time (class state; :func:`faulty_registry` resets it):

    - ``status``: answer every manifest request with this status (401, 403, 404, 500);
    - ``drops``: the next N blob transfers send ``cut`` bytes, then close the connection;
    - ``stall``: blob transfers send ``cut`` bytes, then hold the connection
      open without a byte until ``release`` is set (or the client gives up);
    - ``upload_drop``: close the connection when a blob upload's body starts.
    """

    manifest: bytes = b""
    blobs: dict[str, bytes] = {}
    status: int | None = None
    drops = 0
    stall = False
    cut = 0
    release = threading.Event()
    upload_drop = False
    weights = ""  # the model's weights digest
    blob_gets: list[str | None] = []  # the Range header of each GET of the weights

    def do_GET(self):  # noqa: N802
        cls = FaultyRegistry
        if self.path == "/v2/":
            return self.send(200, b"{}", "application/json")
        if "/manifests/" in self.path:
            if cls.status:
                return self.send(cls.status, b'{"errors": []}', "application/json")
            return self.send(200, cls.manifest, "application/vnd.oci.image.manifest.v1+json")
        digest = self.path.rsplit("/", 1)[-1]
        data = cls.blobs.get(digest)
        if data is None:
            return self.send(404, b"{}", "application/json")
        if digest == cls.weights:
            cls.blob_gets.append(self.headers.get("Range"))
        start, body = send_range(self, data)
        faulty = cls.drops > 0 or cls.stall
        cut = max(0, cls.cut - start) if faulty else len(body)
        self.wfile.write(body[:cut])
        self.wfile.flush()
        if not faulty or cut >= len(body):
            return
        if cls.drops > 0:
            cls.drops -= 1
        else:
            cls.release.wait(timeout=120)  # stalled, the connection open
            if not cls.stall:
                self.wfile.write(body[cut:])
                return
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_HEAD(self):  # noqa: N802
        self.send(404, b"", "application/json")

    def do_POST(self):  # noqa: N802
        self.send_response(202)
        self.send_header("Location", "/v2/uploads/1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self):  # noqa: N802
        if FaultyRegistry.upload_drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send(201, b"", "application/json")


def faulty_registry(gguf: Path) -> tuple[ThreadingHTTPServer, str]:
    """A :class:`FaultyRegistry` serving one model made of ``gguf``, with no
    fault yet; returns the server and the blob's digest."""
    import hashlib

    data = gguf.read_bytes()
    config = json.dumps(dmr_config()).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    FaultyRegistry.blobs = {digest: data, config_digest: config}
    FaultyRegistry.manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.docker.ai.model.config.v0.1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.ai.gguf.v3", "digest": digest, "size": len(data)}],
    }).encode()
    FaultyRegistry.status, FaultyRegistry.drops, FaultyRegistry.stall = None, 0, False
    FaultyRegistry.cut, FaultyRegistry.upload_drop, FaultyRegistry.blob_gets = len(data) // 2, False, []
    FaultyRegistry.release, FaultyRegistry.weights = threading.Event(), digest
    return serve(FaultyRegistry), digest
