"""The supervisor's table: one slot per model that is loaded or wanted, and
the requests routed through it. Plain data; the event loop owns it."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from corral.configs.catalog import ModelSpec


class State(str, enum.Enum):
    WAITING = "waiting"  # requests are queued, no worker yet (waiting for room)
    LOADING = "loading"  # worker spawned, model loading
    READY = "ready"  # idle worker
    BUSY = "busy"  # worker serving a request
    STOPPING = "stopping"  # on the stop ladder


@dataclass(eq=False)
class Request:
    rid: int  # the supervisor's own number, unique for its life
    client: bytes  # ROUTER identity of the client connection
    id: int | str  # the client's id for it, echoed in every reply
    op: str
    msg: dict[str, Any]
    arrived: float
    model: str = ""  # the slot it belongs to
    caused_load: bool = False  # it waited for the model to load


@dataclass(eq=False)
class ModelSlot:
    spec: ModelSpec
    state: State = State.WAITING
    worker: Any = None  # a WorkerProcess while there is one
    queue: deque[Request] = field(default_factory=deque)
    load_waiters: list[Request] = field(default_factory=list)
    active: Request | None = None
    # Seconds a model stays loaded after its last request; None: forever.
    keep_alive: float | None = None
    last_used: float = 0.0
    expires_at: float | None = None  # monotonic
    info: dict[str, Any] = field(default_factory=dict)  # from the worker's ready
    load_error: str | None = None
    served: int = 0
    estimate: Any = None  # a memory.Estimate, made before the first spawn
    rss_bytes: int = 0  # sampled while a worker runs
    # An error that replaces worker_crashed when the supervisor itself killed
    # the worker for a reason the user should hear (e.g. memory).
    kill_error: Any = None

    @property
    def need_bytes(self) -> int:
        """What a spawn of this model is expected to take."""
        return self.estimate.total_bytes if self.estimate is not None else 0

    @property
    def held_bytes(self) -> int:
        """What a loaded model counts against the budget: its estimate, or
        more if it has grown past it."""
        return max(self.need_bytes, self.rss_bytes)

    @property
    def ignore_memory_check(self) -> bool:
        return any(r.msg.get("ignore_memory_check") for r in (*self.queue, *self.load_waiters))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_worker(self) -> bool:
        return self.state in (State.LOADING, State.READY, State.BUSY, State.STOPPING)

    @property
    def wants_worker(self) -> bool:
        return self.state == State.WAITING and bool(self.queue or self.load_waiters)

    @property
    def idle(self) -> bool:
        """Loaded and doing nothing: may be evicted or expire."""
        return self.state == State.READY and self.active is None and not self.queue

    def first_arrival(self) -> float | None:
        waiting = [r.arrived for r in (*self.queue, *self.load_waiters)]
        return min(waiting) if waiting else None
