"""The supervisor's policy as pure functions: hand-built slots, a made-up
clock, no processes and no sleeps."""

from __future__ import annotations

from corral.configs.catalog import ModelSpec
from corral.supervisor import policy
from corral.supervisor.memory import MiB, Estimate
from corral.supervisor.slots import ModelSlot, Request, State


def slot(name: str, state: State = State.READY, last_used: float = 0.0, active: bool = False, queued: int = 0,
         arrived: float = 0.0, mib: int = 100, rss_mib: int = 0) -> ModelSlot:
    estimate = Estimate(weights_bytes=mib * MiB, kv_cache_bytes=0, compute_bytes=0, runtime_bytes=0, context_length=512)
    s = ModelSlot(spec=ModelSpec(name=name, path=f"/m/{name}", backend="llama.cpp"), state=state, last_used=last_used,
                  estimate=estimate, rss_bytes=rss_mib * MiB)
    if active:
        s.running[1] = Request(1, b"c", 1, "generate", {}, arrived)
    for i in range(queued):
        s.queue.append(Request(10 + i, b"c", 10 + i, "generate", {}, arrived + i))
    return s


def test_room_left_spawns_at_once():
    target = slot("b", State.WAITING, queued=1)
    assert policy.admit(target, [slot("a"), target], max_loaded=2, budget=None) == policy.Admission(spawn=True)


def test_full_evicts_least_recently_used_idle():
    a, b, c = slot("a", last_used=5), slot("b", last_used=1), slot("c", last_used=3)
    target = slot("t", State.WAITING, queued=1)
    admission = policy.admit(target, [a, b, c, target], max_loaded=3, budget=None)
    assert admission == policy.Admission(spawn=False, evict=("b",))


def test_busy_model_is_never_evicted():
    busy = slot("a", State.BUSY, active=True)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [busy, target], max_loaded=1, budget=None) == policy.Admission(spawn=False)


def test_idle_before_queued_victims():
    queued = slot("a", last_used=0, queued=2)
    idle = slot("b", last_used=9)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [queued, idle, target], max_loaded=2, budget=None).evict == ("b",)


def test_stopping_worker_counts_as_room_being_made():
    stopping = slot("a", State.STOPPING)
    target = slot("t", State.WAITING, queued=1)
    assert policy.admit(target, [stopping, target], max_loaded=1, budget=None) == policy.Admission(spawn=False)


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
    s.running[1] = Request(1, b"c", 1, "generate", {}, 0.0)
    assert not policy.expired(s, 500.0)  # never while serving
    assert policy.expiry(None, now=100.0) is None


def test_hung():
    assert not policy.hung(last_heard=10.0, now=14.0, silence_limit=5.0)
    assert policy.hung(last_heard=10.0, now=15.5, silence_limit=5.0)


def test_memory_budget_evicts_until_it_fits():
    a, b, c = slot("a", last_used=1, mib=300), slot("b", last_used=2, mib=300), slot("c", last_used=3, mib=300)
    target = slot("t", State.WAITING, queued=1, mib=500)
    admission = policy.admit(target, [a, b, c, target], max_loaded=10, budget=1000 * MiB)
    assert admission == policy.Admission(spawn=False, evict=("a", "b"))
    assert policy.admit(target, [c, target], max_loaded=10, budget=1000 * MiB).spawn


def test_grown_worker_counts_at_its_rss():
    a = slot("a", mib=100, rss_mib=700)
    target = slot("t", State.WAITING, queued=1, mib=400)
    assert policy.admit(target, [a, target], max_loaded=10, budget=1000 * MiB).evict == ("a",)


def test_too_big_for_the_budget_is_refused_with_numbers():
    target = slot("t", State.WAITING, queued=1, mib=170)
    admission = policy.admit(target, [target], max_loaded=1, budget=50 * MiB)
    assert not admission.spawn
    assert admission.refuse.startswith("t needs about 170 MiB; 50 MiB available (budget 50 MiB).")
    assert "--ignore-runtime-memory-check" in admission.refuse


def test_ignore_memory_check():
    target = slot("t", State.WAITING, mib=170)
    target.queue.append(Request(1, b"c", 1, "generate", {"ignore_memory_check": True}, 0.0))
    assert policy.admit(target, [target], max_loaded=1, budget=50 * MiB).spawn


def test_busy_model_makes_a_newcomer_wait_not_fail():
    busy = slot("a", State.BUSY, active=True, mib=600)
    target = slot("t", State.WAITING, queued=1, mib=600)
    assert policy.admit(target, [busy, target], max_loaded=10, budget=1000 * MiB) == policy.Admission(spawn=False)


def test_overgrown():
    a, b = slot("a", mib=100, rss_mib=400), slot("b", mib=100, rss_mib=120)
    assert policy.overgrown([a, b], budget=600 * MiB, growth_limit=1.5) == []  # within budget
    assert policy.overgrown([a, b], budget=500 * MiB, growth_limit=1.5) == [a]


def test_crash_backoff():
    assert policy.backoff_left([10.0, 20.0], now=21.0, limit=3, window=60, backoff=60) is None
    assert policy.backoff_left([10.0, 20.0, 30.0], now=31.0, limit=3, window=60, backoff=60) == 59.0
    assert policy.backoff_left([10.0, 20.0, 30.0], now=91.0, limit=3, window=60, backoff=60) is None
    # three crashes spread over more than the window are no storm
    assert policy.backoff_left([0.0, 50.0, 100.0], now=101.0, limit=3, window=60, backoff=60) is None


def test_fair_queue_interleaves_clients():
    from corral.supervisor.slots import FairQueue

    q = FairQueue()
    batch = [Request(i, b"batch", i, "generate", {}, float(i)) for i in range(5)]
    for r in batch:
        q.append(r)
    assert q.popleft() is batch[0]  # running now
    chat = Request(99, b"chat", 1, "generate", {}, 10.0)
    q.append(chat)
    assert q.peek() is chat  # next after the running one, not after the batch
    assert q.popleft() is chat
    q.remove(batch[2])
    assert batch[2] not in q and batch[3] in q
    assert [q.popleft() for _ in range(len(q))] == [batch[1], batch[3], batch[4]]
    assert not q


def test_fair_queue_round_robin_between_two_batches():
    from corral.supervisor.slots import FairQueue

    q = FairQueue()
    for i in range(3):
        q.append(Request(i, b"a", i, "generate", {}, 0.0))
    for i in range(3):
        q.append(Request(10 + i, b"b", i, "generate", {}, 1.0))
    assert [q.popleft().client for _ in range(6)] == [b"a", b"b", b"a", b"b", b"a", b"b"]
