"""A real OCI registry for the tests: Debian's ``docker-registry`` (the CNCF
Distribution registry) on a free loopback port, with a temporary storage
folder and config file, stopped afterwards. A missing binary fails the
suite; it is never a skip.

The registry logs each request as a JSON line with the bytes it wrote, which
is how the tests count what a pull really downloaded.
"""

from __future__ import annotations

import json
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
