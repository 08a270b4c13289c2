"""The queue of requests waiting for one model, fair across clients."""

from __future__ import annotations

import heapq
from typing import Any, Iterator


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
        self._heap: list[tuple[int, int, Any]] = []
        self._round_of: dict[bytes, int] = {}  # the round of each client's last request
        self._round = 0  # the round of the last request served
        self._seq = 0
        self._removed: set[int] = set()
        self._waiting: dict[bytes, int] = {}  # requests queued per client
        self._len = 0

    def append(self, req: Any) -> None:
        rnd = max(self._round_of.get(req.client, -1) + 1, self._round)
        self._round_of[req.client] = rnd
        self._waiting[req.client] = self._waiting.get(req.client, 0) + 1
        self._seq += 1
        heapq.heappush(self._heap, (rnd, self._seq, req))
        self._len += 1

    def _drop_removed(self) -> None:
        while self._heap and self._heap[0][1] in self._removed:
            self._removed.discard(heapq.heappop(self._heap)[1])

    def peek(self) -> Any:
        """The request that ``popleft`` would return."""
        self._drop_removed()
        return self._heap[0][2]

    def popleft(self) -> Any:
        self._drop_removed()
        rnd, _, req = heapq.heappop(self._heap)
        self._round = rnd
        self._left(req.client)
        return req

    def remove(self, req: Any) -> None:
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

    def __iter__(self) -> Iterator[Any]:
        for _, seq, req in sorted(self._heap):
            if seq not in self._removed:
                yield req

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0
