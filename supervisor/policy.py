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
    refuse: str | None = None  # it can never fit: why, for the error message


def admit(target: ModelSlot, slots: Iterable[ModelSlot], max_loaded: int, budget: int | None) -> Admission:
    """May ``target`` get a worker now; if not, whom to stop for it, or why
    it cannot ever fit.

    ``budget`` is the memory for all models (None: unchecked); each loaded
    model holds ``held_bytes`` of it and the target needs ``need_bytes``.
    A model serving a request is never stopped to make room. Among the
    others, those with nothing queued go first, least recently used first.
    """
    if target.ignore_memory_check:
        budget = None
    others = [s for s in slots if s is not target and s.has_worker]
    # Workers already stopping free their place when they exit.
    staying = [s for s in others if s.state != State.STOPPING]

    def fits(loaded: list[ModelSlot]) -> bool:
        # The limit counts models: a model's replicas are one of them.
        if len({s.group for s in loaded} - {target.group}) >= max_loaded:
            return False
        return budget is None or sum(s.held_bytes for s in loaded) + target.need_bytes <= budget

    if fits(others):
        return Admission(spawn=True)
    if fits(staying):
        return Admission(spawn=False)
    candidates = [s for s in staying if s.state == State.READY and not s.running and s.group != target.group]
    candidates.sort(key=lambda s: (bool(s.queue), s.last_used))
    victims: list[ModelSlot] = []
    for victim in candidates:
        victims.append(victim)
        if fits([s for s in staying if s not in victims]):
            return Admission(spawn=False, evict=tuple(v.name for v in victims))
    if budget is not None and target.need_bytes > budget:
        return Admission(spawn=False, refuse=refusal(target, budget, budget))
    # Busy models will finish; what is left is waiting for them.
    return Admission(spawn=False)


def refusal(target: ModelSlot, available: int, budget: int) -> str:
    mib = 1024 * 1024
    return (
        f"{target.name} needs about {target.need_bytes / mib:.0f} MiB; {available / mib:.0f} MiB available "
        f"(budget {budget / mib:.0f} MiB). Use --ignore-runtime-memory-check to load it anyway."
    )


def overgrown(slots: Iterable[ModelSlot], budget: int, growth_limit: float) -> list[ModelSlot]:
    """Workers to stop because the budget is exceeded and they have grown well
    past their estimate (the others are behaving as announced)."""
    loaded = [s for s in slots if s.has_worker and s.rss_bytes]
    if sum(s.rss_bytes for s in loaded) <= budget:
        return []
    return [s for s in loaded if s.need_bytes and s.rss_bytes > s.need_bytes * growth_limit and s.state != State.STOPPING]


def backoff_left(crashes: list[float], now: float, limit: int, window: float, backoff: float) -> float | None:
    """Seconds until a model that crashed ``limit`` times within ``window``
    seconds may be started again; None if it may be started now."""
    recent = [t for t in crashes if now - t < window + backoff]
    if len(recent) < limit:
        return None
    last = recent[-limit:]
    if last[-1] - last[0] > window:
        return None
    left = last[-1] + backoff - now
    return left if left > 0 else None


def should_yield(slot: ModelSlot, slots: Iterable[ModelSlot], max_loaded: int) -> bool:
    """Hold back ``slot``'s next request while another model has waited
    longer for room: a steady stream for one model must not starve another."""
    slots = list(slots)
    if not slot.queue or len({s.group for s in slots if s.has_worker}) < max_loaded:
        return False
    nxt = slot.queue.peek().arrived
    return any(s.group != slot.group and s.wants_worker and s.first_arrival() < nxt for s in slots)


def expiry(keep_alive: float | None, now: float) -> float | None:
    """When a model that just finished its last request should unload."""
    return None if keep_alive is None else now + keep_alive


def expired(slot: ModelSlot, now: float) -> bool:
    return slot.idle and slot.expires_at is not None and now >= slot.expires_at


def hung(last_heard: float, now: float, silence_limit: float) -> bool:
    return now - last_heard > silence_limit
