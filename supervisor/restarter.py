"""When a model's worker (or the gateway) may be started again.

A process that fails again and again is not restarted in a storm: after
``limit`` failures within ``window`` seconds it waits ``backoff`` seconds.
A second guard catches the supervisor's own mistakes: a model started more
than ``spawn_limit`` times within a window without serving a single request
is a policy bug (a livelock); it is logged as such and backs off the same
way. Histories are pruned as they age, so they stay small for ever.
"""

from __future__ import annotations

from collections import deque

from corral.supervisor.logs import get_logger

log = get_logger()

CRASH_LIMIT, CRASH_WINDOW_S, CRASH_BACKOFF_S = 3, 60.0, 60.0  # the limit is a setting (crash_limit)
SPAWN_LIMIT = 20  # starts per window with nothing served


def backoff_left(times: deque[float] | list[float], now: float, limit: int, window: float, backoff: float) -> float | None:
    """Seconds until something that failed ``limit`` times within ``window``
    seconds may start again; None if it may start now."""
    recent = [t for t in times if now - t < window + backoff]
    if len(recent) < limit:
        return None
    last = recent[-limit:]
    if last[-1] - last[0] > window:
        return None
    left = last[-1] + backoff - now
    return left if left > 0 else None


class Restarter:
    def __init__(self, limit: int = CRASH_LIMIT, window: float = CRASH_WINDOW_S, backoff: float = CRASH_BACKOFF_S,
                 spawn_limit: int = SPAWN_LIMIT):
        self.limit, self.window, self.backoff, self.spawn_limit = limit, window, backoff, spawn_limit
        self.failures: dict[str, deque[float]] = {}
        self.idle_spawns: dict[str, deque[float]] = {}  # starts since it last served
        self.storms: dict[str, float] = {}  # name -> when its spawn storm was stopped

    def _prune(self, history: dict[str, deque[float]], name: str, now: float) -> deque[float]:
        times = history.get(name)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window + self.backoff:
            times.popleft()
        if not times:
            del history[name]
        return times

    def failed(self, name: str, now: float) -> None:
        self._prune(self.failures, name, now)
        self.failures.setdefault(name, deque()).append(now)

    def spawned(self, name: str, now: float) -> None:
        self._prune(self.idle_spawns, name, now)
        times = self.idle_spawns.setdefault(name, deque())
        times.append(now)
        if len([t for t in times if now - t < self.window]) > self.spawn_limit and name not in self.storms:
            log.error("policy bug: a model keeps being started without serving anything; backing off",
                      model=name, starts=len(times), window_s=self.window)
            self.storms[name] = now

    def served(self, name: str) -> None:
        self.idle_spawns.pop(name, None)

    def backoff_left(self, name: str, now: float) -> float | None:
        storm = self.storms.get(name)
        if storm is not None:
            if now - storm < self.backoff:
                return storm + self.backoff - now
            del self.storms[name]
            self.idle_spawns.pop(name, None)
        return backoff_left(self._prune(self.failures, name, now), now, self.limit, self.window, self.backoff)

    def why(self, name: str) -> str:
        if name in self.storms:
            return f"started {self.spawn_limit} times within {self.window:.0f} s without serving a request"
        return f"failed {self.limit} times within {self.window:.0f} s"
