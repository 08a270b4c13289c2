"""What `ps` and `status` report: the table and the supervisor, as plain
maps for the wire."""

from __future__ import annotations

import os
import time
from typing import Iterable

import psutil

from corral.configs.settings import Settings
from corral.supervisor.slots import ModelSlot


def describe_slot(slot: ModelSlot) -> dict:
    """One row of `ps`."""
    worker = slot.worker
    expires = None
    if slot.expires_at is not None and slot.idle:
        expires = time.time() + (slot.expires_at - time.monotonic())  # wall time for people
    return {
        "model": slot.name,
        "replica_of": slot.group if slot.is_replica else None,
        "backend": slot.spec.backend,
        "path": slot.spec.path,
        "pid": worker.pid if worker else None,
        "state": slot.state.value,
        "rss_bytes": worker.rss_bytes() if worker else None,
        "estimate_bytes": slot.need_bytes or None,
        "context_length": slot.info.get("context_length", slot.spec.context_length),
        "expires_at": expires,
        "keep_alive_s": slot.keep_alive,
        "queued": len(slot.queue),
        "served": slot.served,
        "load_ms": slot.info.get("load_ms"),
    }


def supervisor_facts(settings: Settings, started: float, started_wall: float, slots: Iterable[ModelSlot], requests_total: int) -> dict:
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
        "loaded_models": len({s.group for s in slots if s.has_worker}),
        "requests_total": requests_total,
    }
