"""Pure policy: which models make room, whether a spawn may start, when a
model expires. Functions of the table and the time only: they neither log
nor mutate, so tests call them with hand-built slots and a made-up clock.
The event loop in :mod:`corral.supervisor.server` applies their answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from corral.supervisor.slots import ModelSlot, State


@dataclass(frozen=True)
class Admission:
    spawn: bool  # start the target's worker now
    evict: tuple[str, ...] = ()  # stop these first; spawn once they are gone


def admit(target: ModelSlot, slots: Iterable[ModelSlot], max_loaded: int) -> Admission:
    """May ``target`` get a worker now, and if not, whom to stop for it.

    A model serving a request is never stopped to make room. Among the
    others, those with nothing queued go first, least recently used first.
    """
    others = [s for s in slots if s is not target and s.has_worker]
    if len(others) < max_loaded:
        return Admission(spawn=True)
    # Workers already stopping free their place when they exit.
    stopping = sum(1 for s in others if s.state == State.STOPPING)
    need = len(others) - max_loaded + 1 - stopping
    if need <= 0:
        return Admission(spawn=False)
    candidates = [s for s in others if s.state == State.READY and s.active is None]
    candidates.sort(key=lambda s: (bool(s.queue), s.last_used))
    return Admission(spawn=False, evict=tuple(s.name for s in candidates[:need]))


def should_yield(slot: ModelSlot, slots: Iterable[ModelSlot], max_loaded: int) -> bool:
    """Hold back ``slot``'s next request while another model has waited
    longer for room: a steady stream for one model must not starve another."""
    slots = list(slots)
    if not slot.queue or sum(1 for s in slots if s.has_worker) < max_loaded:
        return False
    nxt = slot.queue[0].arrived
    return any(s is not slot and s.wants_worker and s.first_arrival() < nxt for s in slots)


def expiry(keep_alive: float | None, now: float) -> float | None:
    """When a model that just finished its last request should unload."""
    return None if keep_alive is None else now + keep_alive


def expired(slot: ModelSlot, now: float) -> bool:
    return slot.idle and slot.expires_at is not None and now >= slot.expires_at


def hung(last_heard: float, now: float, silence_limit: float) -> bool:
    return now - last_heard > silence_limit
