"""What every benchmark shares: a private corral home, statistics, and a
client that times requests."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from corral.client import Client
from corral.configs.catalog import resolve
from corral.configs.settings import Settings, load_settings

SMOLLM2 = "ai/smollm2"


@contextmanager
def corral_home(**env: str) -> Iterator[Settings]:
    """A fresh CORRAL_HOME (and settings) for one benchmark; its supervisor
    is stopped afterwards."""
    home = tempfile.mkdtemp(prefix="corral-bench-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("CORRAL_HOME", *env)}
    os.environ["CORRAL_HOME"] = home
    os.environ.update(env)
    try:
        yield load_settings()
    finally:
        from corral.client.launch import supervisor_pid

        settings = load_settings()
        if supervisor_pid(settings):
            with Client(settings, autostart=False) as client:
                client.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def smollm2_path() -> str:
    return resolve(SMOLLM2, load_settings()).path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def now() -> float:
    return time.perf_counter()
