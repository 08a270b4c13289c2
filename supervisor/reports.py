"""What `ps` and `status` report: the table and the supervisor, as plain
maps for the wire."""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

import psutil

from corral.configs.settings import Settings
from corral.supervisor.table import Model, Table, Worker


def _wall(monotonic: float | None) -> float | None:
    """A monotonic instant as Unix time, for people."""
    return None if monotonic is None else time.time() + (monotonic - time.monotonic())


def _row(model: Model, worker: Worker | None) -> dict[str, Any]:
    info = worker.info if worker else {}
    return {
        "model": worker.key if worker else model.name,
        "replica_of": model.name if worker and worker.key != model.name else None,
        "backend": model.spec.backend,
        "path": model.spec.path,
        "pid": worker.handle.pid if worker else None,
        "state": (worker.state if worker else model.state).value,
        "rss_bytes": worker.rss_bytes or worker.handle.rss_bytes() if worker else None,
        "estimate_bytes": model.need_bytes or None,
        "context_length": info.get("context_length", worker.spec.context_length if worker else model.spec.context_length),
        "parallel": worker.capacity if worker else None,
        "running": len(worker.running) if worker else 0,
        "expires_at": _wall(model.expires_at) if model.idle else None,
        "keep_alive_s": model.keep_alive,
        "last_used": _wall(model.last_used) if model.last_used else None,
        "queued": len(model.queue),
        "served": worker.served if worker else model.served,
        "load_ms": info.get("load_ms"),
    }


def describe_models(models: Iterable[Model]) -> list[dict[str, Any]]:
    """The rows of `ps`: one per worker, and one for a model still waiting
    for its first."""
    rows = []
    for model in models:
        rows += [_row(model, w) for w in model.workers] or [_row(model, None)]
    return rows


def supervisor_facts(settings: Settings, started: float, started_wall: float, table: Table, gateway: dict | None) -> dict:
    """What `status` shows."""
    budget = settings.memory_budget
    return {
        "pid": os.getpid(),
        "uptime_s": time.monotonic() - started,
        "started_at": started_wall,
        "socket": str(settings.socket_path),
        "home": str(settings.home),
        "memory_budget_bytes": budget if budget is not None else psutil.virtual_memory().available,
        "memory_budget_auto": budget is None,
        "max_loaded_models": settings.max_loaded_models,
        "idle_timeout_s": settings.idle_timeout,
        "max_queue": settings.max_queue,
        "replicas": settings.replicas,
        "loaded_models": sum(1 for m in table.models.values() if m.workers),
        "requests_total": table.requests_total,
        "http": gateway,
    }
