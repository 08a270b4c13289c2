"""Registry credentials from ``~/.docker/config.json`` (or ``$DOCKER_CONFIG``),
where ``docker login`` keeps them: inline ``auths`` or a credential helper."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.store.reference import DOCKER_HUB

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_MAX_CONFIG = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str  # a password, or an identity token when username is "<token>"


def _config() -> dict:
    folder = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = Path(folder) / "config.json"
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(_MAX_CONFIG))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _keys(registry: str) -> tuple[str, ...]:
    if registry == DOCKER_HUB:
        return _DOCKER_HUB_KEYS
    return (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-<helper>`` (the protocol docker itself uses)."""
    if not helper.replace("-", "").replace("_", "").isalnum():
        return None
    program = shutil.which(f"docker-credential-{helper}")
    if not program:
        return None
    try:
        out = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=30, check=True).stdout
        data = json.loads(out[:_MAX_CONFIG])
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("Secret"):
        return Credentials(str(data.get("Username") or ""), str(data["Secret"]))
    return None


def credentials_for(registry: str) -> Credentials | None:
    """What ``docker login`` stored for ``registry``, if anything."""
    config = _config()
    keys = _keys(registry)
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    for key in keys:
        if isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], key)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
    if isinstance(config.get("credsStore"), str):
        return _from_helper(config["credsStore"], keys[0])
    return None
