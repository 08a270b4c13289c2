"""The supervisor's table: one entry per model that is loaded or wanted,
the workers it owns, and the requests routed through them. Plain data; the
event loop owns it and nothing else touches it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from corral.configs.catalog import ModelSpec
from corral.supervisor.fair_queue import FairQueue


class State(str, enum.Enum):
    """A worker's state; a model's is derived from its workers' (``Model.state``)."""

    WAITING = "waiting"  # requests are queued, no worker yet (waiting for room)
    LOADING = "loading"  # worker spawned, model loading
    READY = "ready"  # idle worker
    BUSY = "busy"  # worker serving requests
    STOPPING = "stopping"  # on the stop ladder


@dataclass(eq=False)
class Request:
    rid: int  # the supervisor's own number, unique for its life
    client: bytes  # ROUTER identity of the client connection
    id: int | str  # the client's id for it, echoed in every reply
    msg: Any  # the decoded protocol request (Generate, Chat, Load or Embed)
    arrived: float
    model: str = ""  # the model it belongs to
    caused_load: bool = False  # it waited for the model to load
    sent: float | None = None  # when it went to a worker
    first_token: float | None = None
    retried: bool = False  # put back in the queue once after its worker died

    @property
    def op(self) -> str:
        return self.msg.__struct_config__.tag

    @property
    def debug(self) -> bool:
        return bool(getattr(self.msg, "debug", False))

    @property
    def max_tokens(self) -> int:
        options = getattr(self.msg, "options", None)
        return (options.max_tokens or 0) if options is not None else 0


@dataclass(eq=False)
class Worker:
    """One worker process of a model (its first, or a replica)."""

    key: str  # "ai/smollm2", then "ai/smollm2#2", ... for replicas
    model: "Model"
    spec: ModelSpec  # what it was started with (load-time settings)
    handle: Any  # a launcher's handle: the process, its sentinel fd, the stop ladder
    state: State = State.LOADING
    # Requests sent to the worker, by rid, oldest first.
    running: dict[int, Request] = field(default_factory=dict)
    capacity: int = 1  # sequences it decodes together (from its ready event)
    info: dict[str, Any] = field(default_factory=dict)  # from its ready event
    rss_bytes: int = 0  # sampled while it runs
    load_error: str | None = None
    # An error that replaces worker_crashed when the supervisor itself killed
    # the worker for a reason the user should hear (e.g. memory).
    kill_error: Any = None
    last_used: float = 0.0
    served: int = 0
    threads: int = 0  # engine threads it runs now (0: unknown, or a backend that cannot change them)

    @property
    def identity(self) -> bytes:
        return self.handle.identity

    @property
    def live(self) -> bool:
        """Loading or serving; not on its way out."""
        return self.state in (State.LOADING, State.READY, State.BUSY)

    @property
    def stale(self) -> bool:
        """Started with load-time settings the model no longer has."""
        return self.spec.context_length != self.model.spec.context_length

    @property
    def need_bytes(self) -> int:
        return self.model.need_bytes

    @property
    def held_bytes(self) -> int:
        """What it counts against the budget: its estimate, or more if it
        has grown past it."""
        return max(self.need_bytes, self.rss_bytes)


@dataclass(eq=False)
class Model:
    """A model that is loaded or wanted: its queue and the workers it owns."""

    spec: ModelSpec
    estimate: Any = None  # a memory.Estimate, made before the first spawn
    keep_alive: float | None = None  # seconds after the last request; None: forever
    queue: FairQueue = field(default_factory=FairQueue)
    load_waiters: list[Request] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    replicas: int = 1  # workers wanted while it has work
    served: int = 0
    # Requests started since its newest worker became ready: a model that
    # loaded serves at least one before it yields its place (no livelock).
    started_since_ready: int = 0
    last_used: float = 0.0
    expires_at: float | None = None  # monotonic

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def need_bytes(self) -> int:
        """What one worker of this model is expected to take."""
        return self.estimate.total_bytes if self.estimate is not None else 0

    @property
    def held_bytes(self) -> int:
        return sum(w.held_bytes for w in self.workers)

    @property
    def has_worker(self) -> bool:
        return bool(self.workers)

    @property
    def has_work(self) -> bool:
        return bool(self.queue or self.load_waiters)

    @property
    def running(self) -> int:
        return sum(len(w.running) for w in self.workers)

    @property
    def fresh_workers(self) -> list[Worker]:
        """Live workers with the model's current load-time settings."""
        return [w for w in self.workers if w.live and not w.stale]

    @property
    def wants_worker(self) -> bool:
        """Work is waiting and no worker of the current settings is on its way."""
        return self.has_work and not self.fresh_workers

    @property
    def idle(self) -> bool:
        """Loaded and doing nothing: may be evicted or expire."""
        return bool(self.workers) and all(w.state == State.READY for w in self.workers) and not self.running and not self.has_work

    @property
    def ignore_memory_check(self) -> bool:
        return any(r.msg.ignore_memory_check for r in (*self.queue, *self.load_waiters))

    @property
    def state(self) -> State:
        """One word for `ps`: the busiest of its workers' states."""
        states = {w.state for w in self.workers}
        for s in (State.BUSY, State.LOADING, State.READY, State.STOPPING):
            if s in states:
                return s
        return State.WAITING

    def first_arrival(self) -> float | None:
        waiting = [r.arrived for r in (*self.queue, *self.load_waiters)]
        return min(waiting) if waiting else None

    def next_key(self) -> str:
        """The key of its next worker: the model's name, then name#2, ..."""
        taken = {w.key for w in self.workers}
        n = 1
        while (key := self.name if n == 1 else f"{self.name}#{n}") in taken:
            n += 1
        return key


@dataclass
class HeldReply:
    """An answer sent only once these workers (socket identities) have
    exited: an unload is answered when its memory is free and `ps` no longer
    lists the model."""

    client: bytes
    frame: bytes
    workers: set[bytes]


@dataclass
class Table:
    """Everything the supervisor knows, indexed the ways the loop looks it up."""

    models: dict[str, Model] = field(default_factory=dict)
    requests: dict[int, Request] = field(default_factory=dict)  # rid -> queued or running
    by_client: dict[tuple[bytes, Any], int] = field(default_factory=dict)  # (client, id) -> rid
    workers: dict[bytes, Worker] = field(default_factory=dict)  # by both socket identities
    held_replies: list[HeldReply] = field(default_factory=list)
    next_rid: int = 1
    requests_total: int = 0

    def new_rid(self) -> int:
        self.next_rid += 1
        return self.next_rid - 1

    def add(self, req: Request) -> None:
        self.requests[req.rid] = req
        self.by_client[(req.client, req.id)] = req.rid

    def forget(self, req: Request) -> None:
        self.requests.pop(req.rid, None)
        if self.by_client.get((req.client, req.id)) == req.rid:
            del self.by_client[(req.client, req.id)]

    def find(self, client: bytes, id: Any) -> Request | None:
        rid = self.by_client.get((client, id))
        return self.requests.get(rid) if rid is not None else None

    def released_by(self, identity: bytes) -> list[HeldReply]:
        """The held replies that waited for this worker's exit alone."""
        for held in self.held_replies:
            held.workers.discard(identity)
        ready = [h for h in self.held_replies if not h.workers]
        self.held_replies = [h for h in self.held_replies if h.workers]
        return ready

    def all_workers(self) -> list[Worker]:
        return [w for m in self.models.values() for w in m.workers]
