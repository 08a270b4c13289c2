"""Settings: ``defaults.toml``, then the file named by ``CORRAL_CONFIG``,
then ``CORRAL_*`` environment variables, each layer over the one before."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

from corral.supervisor.errors import UsageError

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(text: str | int | float, what: str = "duration") -> float | None:
    """Seconds from ``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of
    seconds; ``None`` (never) for a negative value, as Ollama's keep_alive."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise UsageError(f"invalid {what} {text!r}: use e.g. 30s, 5m, 1h, 0 or -1")
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    return None if seconds < 0 else seconds


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``"2GiB"``, ``"512MB"``, ``"50MiB"`` or a plain number."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"invalid {what} {text!r}: use e.g. 512MiB or 2GiB")
    base = 1024 if match[3] or not match[2] else 1000
    return int(float(match[1]) * base ** _SIZE_POWERS[match[2].lower()])


def format_size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Settings:
    home: Path
    idle_timeout: float | None
    max_loaded_models: int
    memory_budget: int | None  # None: the machine's available memory
    max_queue: int
    replicas: int
    heartbeat_interval: float
    heartbeat_liveness: int
    stop_timeout: float
    enable_echo_backend: bool = False
    config_file: Path | None = None
    models_dir: Path | None = None  # None: $CORRAL_HOME/models
    log_level: str = "info"
    crash_limit: int = 3  # failures within a minute that start a back-off
    parallel: int | None = None  # None: the backend's default
    http: tuple[str, int] | None = ("127.0.0.1", 12434)  # None: no gateway
    api_key: str | None = None
    http_origins: tuple[str, ...] = ()
    stall_timeout: float = 20.0  # a transfer silent this long is stalled
    default_model: str | None = None  # what llama-server's routes run when a request names no model
    http_read_timeout: float = 10.0  # a request's head must arrive, its body not pause, within this
    http_max_connections: int | None = None  # None: what the file limit allows

    @property
    def models(self) -> Path:
        """The model store (``CORRAL_MODELS``)."""
        return self.models_dir or self.home / "models"

    @property
    def socket_path(self) -> Path:
        return self.home / "corral.sock"

    @property
    def workers_socket_path(self) -> Path:
        return self.home / "workers.sock"

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.socket_path}"

    @property
    def workers_endpoint(self) -> str:
        return f"ipc://{self.workers_socket_path}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.log_dir / "supervisor.log"

    @property
    def start_lock(self) -> Path:
        """Held by a client while it starts a supervisor."""
        return self.home / "start.lock"

    @property
    def pid_lock(self) -> Path:
        """Held by the running supervisor for its whole life."""
        return self.home / "supervisor.pid"

    @property
    def user_catalog(self) -> Path:
        return self.home / "models.toml"


def _default_home(env: Mapping[str, str]) -> Path:
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "corral"


def _read_toml(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist; fix CORRAL_CONFIG") from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_address(text: str, what: str = "http") -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) for a listening address, or None for ``off``."""
    text = str(text).strip()
    if text.lower() in ("off", "none", "false", "0", ""):
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"invalid {what} address {text!r}: use host:port (e.g. 127.0.0.1:12434) or off")
    return host, int(port)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw = tomllib.loads(resources.files("corral.configs").joinpath("defaults.toml").read_text())
    config_file = Path(env["CORRAL_CONFIG"]).expanduser() if env.get("CORRAL_CONFIG") else None
    if config_file:
        layered = _read_toml(config_file, "config file")
        unknown = set(layered) - set(raw)
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(sorted(unknown))} in {config_file}")
        raw.update(layered)
    for key in raw:
        value = env.get(f"CORRAL_{key.upper()}")
        if value not in (None, ""):
            raw[key] = value

    def integer(key: str, minimum: int) -> int:
        try:
            value = int(raw[key])
        except (TypeError, ValueError):
            raise UsageError(f"{key} must be a whole number, not {raw[key]!r}") from None
        if value < minimum:
            raise UsageError(f"{key} must be at least {minimum}")
        return value

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        value = str(raw[key]).lower()
        if value not in allowed:
            raise UsageError(f"{key} must be one of {', '.join(allowed)}, not {raw[key]!r}")
        return value

    budget = raw["memory_budget"]
    home = Path(raw["home"]).expanduser() if raw["home"] else _default_home(env)
    return Settings(
        home=home.absolute(),
        idle_timeout=parse_duration(raw["idle_timeout"], "idle_timeout"),
        max_loaded_models=integer("max_loaded_models", 1),
        memory_budget=None if str(budget).lower() == "auto" else parse_size(budget, "memory_budget"),
        max_queue=integer("max_queue", 1),
        replicas=integer("replicas", 1),
        heartbeat_interval=parse_duration(raw["heartbeat_interval"], "heartbeat_interval") or 1.0,
        heartbeat_liveness=integer("heartbeat_liveness", 2),
        stop_timeout=parse_duration(raw["stop_timeout"], "stop_timeout") or 0.5,
        enable_echo_backend=str(raw["enable_echo_backend"]).lower() in ("1", "true", "yes"),
        config_file=config_file,
        models_dir=Path(raw["models"]).expanduser().absolute() if raw["models"] else None,
        log_level=choice("log_level", LOG_LEVELS),
        crash_limit=integer("crash_limit", 1),
        parallel=None if str(raw["parallel"]).lower() == "auto" else integer("parallel", 1),
        http=parse_address(raw["http"]),
        api_key=str(raw["api_key"]) or None,
        http_origins=tuple(o.strip() for o in str(raw["http_origins"]).split(",") if o.strip()),
        stall_timeout=parse_duration(raw["stall_timeout"], "stall_timeout") or 20.0,
        default_model=str(raw["default_model"]).strip() or None,
        http_read_timeout=parse_duration(raw["http_read_timeout"], "http_read_timeout") or 10.0,
        http_max_connections=None if str(raw["http_max_connections"]).lower() == "auto"
        else integer("http_max_connections", 8),
    )
