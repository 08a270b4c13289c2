"""The gateway's own settings: where it listens, who may call it.

They are corral settings like any other (``CORRAL_HTTP``, ``CORRAL_API_KEY``,
``CORRAL_HTTP_ORIGINS``, or the config file); ``--listen`` overrides the
address. Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from corral.configs.settings import Settings
from corral.supervisor.errors import UsageError

#: Largest request body accepted (Docker Model Runner's cap).
MAX_BODY_BYTES = 10 * 1024 * 1024
# Names a browser or a client on this machine uses for a loopback server.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]", "localhost.localdomain")


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    api_key: str | None = None
    origins: tuple[str, ...] = ()

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def allowed_hosts(self) -> frozenset[str] | None:
        """Host header values (without port) this gateway answers; None when
        bound to every address, where the API key is the guard. A page on
        another site that rebinds its DNS name to 127.0.0.1 still sends its
        own name, so it is refused (Ollama's CVE-2024-28224)."""
        if self.wildcard:
            return None
        names = {*LOCAL_NAMES, self.host.lower(), f"[{self.host.lower()}]"}
        if not self.loopback:
            # A container reaching the host's corral (docker's host-gateway name).
            names |= {"host.docker.internal", socket.gethostname().lower()}
        return frozenset(names)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (loopback) as (host, port)."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"invalid HTTP address {text!r}: use HOST:PORT, e.g. 127.0.0.1:12434")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"invalid HTTP address {text!r}: HOST must be an IP address or localhost") from None
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def load_gateway_config(settings: Settings, listen: str | None = None) -> GatewayConfig:
    """The gateway's settings; refuses to listen beyond loopback without a key."""
    if listen:
        host, port = parse_listen(listen)
    elif settings.http is None:
        raise UsageError("the HTTP gateway is off (CORRAL_HTTP=off); pass --listen HOST:PORT to run it anyway")
    else:
        host, port = parse_listen(f"[{settings.http[0]}]:{settings.http[1]}")
    config = GatewayConfig(host, port, settings.api_key or None, tuple(o.rstrip("/") for o in settings.http_origins))
    if not config.loopback and not config.api_key:
        raise UsageError(
            f"refusing to listen on {config.address} (beyond loopback) without an API key: "
            "set CORRAL_API_KEY, or listen on 127.0.0.1"
        )
    return config
