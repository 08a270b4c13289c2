"""An OCI distribution client: manifests, blobs (with Range), uploads, and the
token dance (``WWW-Authenticate: Bearer realm=…,service=…,scope=…``, or
Basic) with credentials from ``~/.docker/config.json``.

HTTP is httpx: one connection pool per registry, streamed bodies, and on a
redirect to another origin (registries hand blobs to a CDN) it drops the
Authorization header by itself.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import re
import ssl
from typing import Iterable, Iterator
from urllib.parse import urljoin

import httpx

from corral.store import artifact
from corral.store.credentials import Credentials, credentials_for
from corral.store.net_errors import network_error
from corral.store.reference import Reference
from corral.supervisor.errors import ModelNotFound, RegistryError
from corral.supervisor.logs import get_logger

log = get_logger()

USER_AGENT = "corral/0.1"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_MAX_TOKEN_BYTES = 1024 * 1024
ACCEPT = ", ".join((*artifact.MANIFEST_TYPES, *artifact.INDEX_TYPES))


def _read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"the registry sent a {what} larger than {limit} bytes")
    return bytes(data)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs
    ~35 ms, too much to pay for every pull of a model already present."""
    return httpx.create_ssl_context()


class RegistryClient:
    """One registry repository, for pulling (``push=False``) or pushing."""

    def __init__(self, ref: Reference, *, push: bool = False, credentials: Credentials | None = None,
                 stall_timeout: float = 20.0):
        self.ref = ref
        self.stall_timeout = stall_timeout
        self.name = ref.registry
        scheme = "http" if ref.is_loopback else "https"
        self.base = f"{scheme}://{ref.api_host}"
        self.scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self.credentials = credentials if credentials is not None else credentials_for(ref.registry)
        self.http = httpx.Client(
            # Silence longer than stall_timeout is a stall: noticed in
            # seconds, then resumed from where it stopped (blobs.py).
            timeout=httpx.Timeout(stall_timeout, connect=min(stall_timeout, 10.0)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            verify=_ssl_context(),
        )
        self._authorization: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.ref.repository}/{path}"

    # -- auth -------------------------------------------------------------------

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(_CHALLENGE.findall(params))
        if scheme.lower() == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.ref.registry} needs a login: run `docker login {self.ref.registry}`")
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
            return
        if scheme.lower() != "bearer" or not fields.get("realm", "").startswith(("https://", "http://")):
            raise RegistryError(f"{self.ref.registry} asks for an authentication corral does not speak ({scheme[:40]})")
        query = {"scope": fields.get("scope") or self.scope}
        if fields.get("service"):
            query["service"] = fields["service"]
        auth = None
        if self.credentials and self.credentials.username != "<token>":
            auth = httpx.BasicAuth(self.credentials.username, self.credentials.password)
        elif self.credentials:
            query["refresh_token"] = self.credentials.password
        try:
            with self.http.stream("GET", fields["realm"], params=query, auth=auth) as response:
                if response.status_code != 200:
                    raise RegistryError(
                        f"{self.ref.registry} refused a token ({response.status_code}); log in with `docker login {self.ref.registry}`"
                    )
                data = httpx.Response(200, content=_read_bounded(response, _MAX_TOKEN_BYTES, "token")).json()
        except httpx.HTTPError as exc:
            raise network_error(exc, f"{self.ref.registry}'s token service {fields['realm'][:100]}",
                                self.stall_timeout) from None
        except (ValueError, RecursionError):
            raise RegistryError(f"{self.ref.registry}'s token service did not answer JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise RegistryError(f"{self.ref.registry}'s token service sent no token")
        self._authorization = f"Bearer {token}"

    @contextlib.contextmanager
    def _send(self, method: str, url: str, *, headers: dict | None = None, content=None,
              follow: bool = False) -> Iterator[httpx.Response]:
        """A streamed request, authenticated on the registry's first 401."""
        for attempt in (1, 2):
            request_headers = dict(headers or {})
            if self._authorization:
                request_headers["Authorization"] = self._authorization
            request = self.http.build_request(method, url, headers=request_headers, content=content)
            try:
                response = self.http.send(request, stream=True, follow_redirects=follow)
            except httpx.HTTPError as exc:
                raise network_error(exc, self.ref.registry, self.stall_timeout) from None
            if response.status_code == 401 and attempt == 1 and "www-authenticate" in response.headers:
                response.close()
                self._authenticate(response.headers["www-authenticate"])
                continue
            try:
                yield response
            except httpx.HTTPError as exc:  # the body broke off or stalled
                raise network_error(exc, self.ref.registry, self.stall_timeout) from None
            finally:
                response.close()
            return

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        if response.status_code in (401, 403):
            return RegistryError(
                f"{self.ref.registry} denied access to {self.ref.repository} ({response.status_code}); "
                f"check the name, or log in with `docker login {self.ref.registry}`"
            )
        return RegistryError(f"{self.ref.registry} answered {response.status_code} for {what}")

    # -- pulling --------------------------------------------------------------------

    def get_manifest(self) -> tuple[bytes, str, str]:
        """The manifest's bytes, its media type and its digest (checked
        against the reference when that names a digest)."""
        with self._send("GET", self.url(f"manifests/{self.ref.manifest_ref}"), headers={"Accept": ACCEPT}) as r:
            if r.status_code == 404:
                raise ModelNotFound(f"{self.ref.display} was not found at {self.ref.registry}")
            if r.status_code != 200:
                raise self._fail(r, f"the manifest of {self.ref.display}")
            raw = _read_bounded(r, artifact.MAX_MANIFEST_BYTES, "manifest")
            media_type = r.headers.get("content-type", "")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise RegistryError(f"{self.ref.registry} sent a manifest whose digest is {digest}, not {self.ref.digest}")
        return raw, media_type, digest

    @contextlib.contextmanager
    def open_blob(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[httpx.Response]:
        """The blob's bytes from ``start`` (to ``end``, inclusive): the
        response is 206 when the registry honoured the range, else 200."""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        with self._send("GET", self.url(f"blobs/{digest}"), headers=headers, follow=True) as r:
            if r.status_code == 416 and start:
                # nothing past start: the partial file already holds everything
                yield r
                return
            if r.status_code not in (200, 206):
                raise self._fail(r, f"blob {digest[:19]}")
            yield r

    # -- pushing --------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        with self._send("HEAD", self.url(f"blobs/{digest}"), follow=True) as r:
            return r.status_code == 200

    def upload_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """A monolithic upload: POST for a session, then one PUT of the bytes."""
        with self._send("POST", self.url("blobs/uploads/")) as r:
            if r.status_code != 202 or "location" not in r.headers:
                raise self._fail(r, "starting an upload")
            location = urljoin(self.base + "/", r.headers["location"])
        separator = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._send("PUT", f"{location}{separator}digest={digest}", headers=headers, content=chunks) as r:
            if r.status_code != 201:
                raise self._fail(r, f"uploading blob {digest[:19]}")

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> None:
        with self._send("PUT", self.url(f"manifests/{tag}"), headers={"Content-Type": media_type}, content=data) as r:
            if r.status_code not in (200, 201):
                raise self._fail(r, "the manifest")
