"""The supervisor's table: one slot per model that is loaded or wanted, and
the requests routed through it. Plain data; the event loop owns it."""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterator

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


class FairQueue:
    """Requests waiting for one model, served fairly across clients: one
    client's thousand-prompt batch does not starve another's chat.

    Each client's requests are numbered in rounds (its first waiting request
    is in the current round, its second in the next, ...), and the queue
    serves round by round, in arrival order within a round. A client that
    arrives while a batch is queued is therefore served after at most the
    request that is running.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Request]] = []
        self._round_of: dict[bytes, int] = {}  # the round of each client's last request
        self._round = 0  # the round of the last request served
        self._seq = 0
        self._removed: set[int] = set()
        self._waiting: dict[bytes, int] = {}  # requests queued per client
        self._len = 0

    def append(self, req: Request) -> None:
        rnd = max(self._round_of.get(req.client, -1) + 1, self._round)
        self._round_of[req.client] = rnd
        self._waiting[req.client] = self._waiting.get(req.client, 0) + 1
        self._seq += 1
        heapq.heappush(self._heap, (rnd, self._seq, req))
        self._len += 1

    def _drop_removed(self) -> None:
        while self._heap and self._heap[0][1] in self._removed:
            self._removed.discard(heapq.heappop(self._heap)[1])

    def peek(self) -> Request:
        """The request that ``popleft`` would return."""
        self._drop_removed()
        return self._heap[0][2]

    def popleft(self) -> Request:
        self._drop_removed()
        rnd, _, req = heapq.heappop(self._heap)
        self._round = rnd
        self._left(req.client)
        return req

    def remove(self, req: Request) -> None:
        for _, seq, queued in self._heap:
            if queued is req and seq not in self._removed:
                self._removed.add(seq)
                self._left(req.client)
                return
        raise ValueError("request not queued")

    def _left(self, client: bytes) -> None:
        self._len -= 1
        self._waiting[client] -= 1
        if not self._waiting[client]:
            # Its line is empty: its next request starts in the current round.
            del self._waiting[client], self._round_of[client]

    def __contains__(self, req: object) -> bool:
        return any(queued is req for queued in self)

    def __iter__(self) -> Iterator[Request]:
        for _, seq, req in sorted(self._heap):
            if seq not in self._removed:
                yield req

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0


@dataclass(eq=False)
class ModelSlot:
    """One worker's place: a model's primary worker, or one of its replicas
    (named ``model#2``, ``model#3``, ...), which share the primary's queue."""

    spec: ModelSpec
    state: State = State.WAITING
    worker: Any = None  # a WorkerProcess while there is one
    queue: FairQueue = field(default_factory=FairQueue)
    load_waiters: list[Request] = field(default_factory=list)
    # Requests sent to the worker, by rid, oldest first: the first is being
    # generated, the next waits inside the worker so that it starts the
    # moment the first ends (no round trip through the supervisor between).
    running: dict[int, Request] = field(default_factory=dict)
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
    group: str = ""  # the model's name, shared by its replicas

    def __post_init__(self) -> None:
        self.group = self.group or self.spec.name

    @property
    def is_replica(self) -> bool:
        return self.group != self.spec.name

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
        return self.state == State.READY and not self.running and not self.queue

    def first_arrival(self) -> float | None:
        waiting = [r.arrived for r in (*self.queue, *self.load_waiters)]
        return min(waiting) if waiting else None
