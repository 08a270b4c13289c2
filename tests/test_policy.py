"""The supervisor's policy as pure functions: hand-built slots, a made-up
clock, no processes and no sleeps."""

from __future__ import annotations

from corral.configs.catalog import ModelSpec
from corral.supervisor import policy
from corral.supervisor.slots import ModelSlot, Request, State


def slot(name: str, state: State = State.READY, last_used: float = 0.0, active: bool = False, queued: int = 0, arrived: float = 0.0) -> ModelSlot:
    s = ModelSlot(spec=ModelSpec(name=name, path=f"/m/{name}", backend="llama.cpp"), state=state, last_used=last_used)
    if active:
        s.active = Request(1, b"c", 1, "generate", {}, arrived)
    for i in range(queued):
        s.queue.append(Request(10 + i, b"c", 10 + i, "generate", {}, arrived + i))
    return s


def test_room_left_spawns_at_once():
    target = slot("b", State.WAITING, queued=1)
    assert policy.admit(target, [slot("a"), target], max_loaded=2) == policy.Admission(spawn=True)


def test_full_evicts_least_recently_used_idle():
    a, b, c = slot("a", last_used=5), slot("b", last_used=1), slot("c", last_used=3)
    target = slot("t", State.WAITING, queued=1)
    admission = policy.admit(target, [a, b, c, target], max_loaded=3)
    assert admission == policy.Admission(spawn=False, evict=("b",))


def test_busy_model_is_never_evicted():
    busy = slot("a", State.BUSY, active=True)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [busy, target], max_loaded=1) == policy.Admission(spawn=False)


def test_idle_before_queued_victims():
    queued = slot("a", last_used=0, queued=2)
    idle = slot("b", last_used=9)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [queued, idle, target], max_loaded=2).evict == ("b",)


def test_stopping_worker_counts_as_room_being_made():
    stopping = slot("a", State.STOPPING)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [stopping, target], max_loaded=1) == policy.Admission(spawn=False)


def test_loaded_model_yields_to_one_waiting_longer():
    a = slot("a", queued=1, arrived=10.0)
    b = slot("b", State.WAITING, queued=1, arrived=5.0)
    assert policy.should_yield(a, [a, b], max_loaded=1)
    assert not policy.should_yield(a, [a, b], max_loaded=2)  # b can load beside it
    later = slot("b", State.WAITING, queued=1, arrived=20.0)
    assert not policy.should_yield(a, [a, later], max_loaded=1)


def test_expiry():
    s = slot("a")
    s.expires_at = policy.expiry(30.0, now=100.0)
    assert not policy.expired(s, 129.9)
    assert policy.expired(s, 130.0)
    s.active = Request(1, b"c", 1, "generate", {}, 0.0)
    assert not policy.expired(s, 500.0)  # never while serving
    assert policy.expiry(None, now=100.0) is None


def test_hung():
    assert not policy.hung(last_heard=10.0, now=14.0, silence_limit=5.0)
    assert policy.hung(last_heard=10.0, now=15.5, silence_limit=5.0)
