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
import time
from dataclasses import dataclass, field
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
