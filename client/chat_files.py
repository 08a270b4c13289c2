"""Saved chats (``/save NAME``, ``/load-chat NAME``) and the chat's input
history, under ``$CORRAL_HOME``, readable by the user only.

A chat's NAME becomes a file name, so it is checked against a strict
pattern first: no path separators, no leading dot, nothing a shell or a
file system would read specially.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from corral.configs.settings import Settings
from corral.supervisor.errors import UsageError
from corral.store.layout import write_atomically

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CHAT_BYTES = 64 * 1024 * 1024
# The history file is trimmed to this when the chat starts.
MAX_HISTORY_BYTES = 1024 * 1024


def chats_dir(settings: Settings) -> Path:
    return settings.home / "chats"


def chat_path(settings: Settings, name: str) -> Path:
    if not NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"{name!r} cannot name a chat: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return chats_dir(settings) / f"{name}.json"


def save_chat(settings: Settings, name: str, record: dict[str, Any]) -> Path:
    """Write the chat atomically (a reader never sees half of it), mode 0600."""
    path = chat_path(settings, name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, ensure_ascii=False, indent=1).encode())  # 0600, as mkstemp makes it
    return path


def load_chat(settings: Settings, name: str) -> Any:
    path = chat_path(settings, name)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CHAT_BYTES + 1)
    except FileNotFoundError:
        saved = sorted(p.stem for p in chats_dir(settings).glob("*.json")) if chats_dir(settings).is_dir() else []
        raise UsageError(f"no saved chat {name!r}" + (f"; saved: {', '.join(saved)}" if saved else "; /save NAME saves one")) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CHAT_BYTES:
        raise UsageError(f"{path} is over {MAX_CHAT_BYTES // 2**20} MiB; it is not a chat corral saved")
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise UsageError(f"{path} nests too deeply; it is not a chat corral saved") from None


def history_path(settings: Settings, env: dict[str, str] | os._Environ = os.environ) -> Path | None:
    """The chat's input history file, created 0600; None when
    ``CORRAL_NOHISTORY`` is set (to anything but 0 or empty)."""
    if env.get("CORRAL_NOHISTORY", "") not in ("", "0"):
        return None
    path = settings.home / "history"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.fstat(fd).st_size > MAX_HISTORY_BYTES:
            _trim_history(path)
    finally:
        os.close(fd)
    return path


def _trim_history(path: Path) -> None:
    """Keep the newest entries that fit MAX_HISTORY_BYTES. An entry of
    prompt_toolkit's history file begins with a ``# timestamp`` line."""
    data = path.read_bytes()[-MAX_HISTORY_BYTES:]
    start = data.find(b"\n#")
    # atomically: a full disk mid-write must not leave the history cut
    write_atomically(path, data[start + 1 :] if start >= 0 else b"")
