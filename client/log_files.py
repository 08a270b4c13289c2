"""``corral logs``: which file holds a log, and printing its last lines
(and, with ``--follow``, what is written after them)."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Callable

from corral.configs.settings import Settings
from corral.supervisor.errors import UsageError

FOLLOW_POLL_S = 0.2


def log_path(settings: Settings, model: str | None) -> Path:
    """The supervisor's log, or MODEL's worker log. A model given as a
    relative path names the same log as its absolute path."""
    from corral.client.requests import model_ref
    from corral.supervisor.worker_process import worker_log_path

    path = worker_log_path(settings, model_ref(model)) if model else settings.supervisor_log
    if not path.exists():
        raise UsageError(f"no log at {path} yet" + ("" if model else "; the supervisor has not run"))
    return path


def print_tail(path: Path, lines: int, follow: bool, echo: Callable[[str], None]) -> None:
    """The last ``lines`` lines (reading the file once, keeping only those)."""
    with open(path, errors="replace") as f:
        for line in deque(f, maxlen=lines):
            echo(line)
        while follow:
            line = f.readline()
            if line:
                echo(line)
            else:
                time.sleep(FOLLOW_POLL_S)
