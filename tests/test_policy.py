"""The supervisor's policy as pure functions: hand-built models, a made-up
clock, no processes and no sleeps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corral.configs.catalog import ModelSpec
from corral.supervisor import policy
from corral.supervisor.memory import MiB, Estimate
from corral.supervisor.restarter import Restarter
from corral.supervisor.table import Model, Request, State, Worker

R = State.READY


def request(rid: int, arrived: float = 0.0, client: bytes = b"c", max_tokens: int | None = None) -> Request:
    msg = SimpleNamespace(options=SimpleNamespace(max_tokens=max_tokens), ignore_memory_check=False)
    return Request(rid, client, rid, msg, arrived)


def model(name: str, *states: State, last_used: float = 0.0, running: int = 0, queued: int = 0, arrived: float = 0.0,
          mib: int = 100, rss_mib: int = 0, started: int = 1, context: int = 512) -> Model:
    """A model with one worker per state given (none: waiting for one)."""
    estimate = Estimate(weights_bytes=mib * MiB, kv_cache_bytes=0, compute_bytes=0, runtime_bytes=0, context_length=context)
    spec = ModelSpec(name=name, path=f"/m/{name}", backend="llama.cpp", context_length=context)
    m = Model(spec=spec, estimate=estimate, last_used=last_used, started_since_ready=started)
    for i, state in enumerate(states):
        w = Worker(key=name if i == 0 else f"{name}#{i + 1}", model=m, spec=spec, handle=None, state=state,
                   rss_bytes=rss_mib * MiB)
        m.workers.append(w)
    for i in range(running):
        m.workers[0].running[100 + i] = request(100 + i)
    for i in range(queued):
        m.queue.append(request(10 + i, arrived + i))
    return m


def test_room_left_spawns_at_once():
    target = model("b", queued=1)
    assert policy.admit(target, [model("a", R), target], max_loaded=2, budget=None) == policy.Admission(spawn=True)


def test_full_evicts_least_recently_used_idle():
    a, b, c = model("a", R, last_used=5), model("b", R, last_used=1), model("c", R, last_used=3)
    target = model("t", queued=1)
    assert policy.admit(target, [a, b, c, target], max_loaded=3, budget=None) == policy.Admission(spawn=False, evict=("b",))


def test_busy_model_is_never_evicted():
    busy = model("a", State.BUSY, running=1)
    target = model("t", queued=1)
    assert policy.admit(target, [busy, target], max_loaded=1, budget=None) == policy.Admission(spawn=False)


def test_idle_before_queued_victims():
    queued, idle = model("a", R, last_used=0, queued=2), model("b", R, last_used=9)
    target = model("t", queued=1)
    assert policy.admit(target, [queued, idle, target], max_loaded=2, budget=None).evict == ("b",)


def test_stopping_worker_counts_as_room_being_made():
    stopping, target = model("a", State.STOPPING), model("t", queued=1)
    assert policy.admit(target, [stopping, target], max_loaded=1, budget=None) == policy.Admission(spawn=False)


def test_a_model_that_just_loaded_cannot_be_evicted_before_it_starts_a_request():
    # The livelock: A is ready with work queued, B waits; evicting A now
    # would start A again for its queue, and so on for ever.
    fresh = model("a", R, queued=2, started=0)
    target = model("b", queued=1, arrived=-1.0)
    assert policy.admit(target, [fresh, target], max_loaded=1, budget=None) == policy.Admission(spawn=False)
    assert not policy.must_yield(fresh, [fresh, target], max_loaded=1, budget=None)
    fresh.started_since_ready = 1  # it has served: now it yields to the older waiter
    assert policy.must_yield(fresh, [fresh, target], max_loaded=1, budget=None)


@pytest.mark.parametrize("b_arrives, order", [(1.5, ["a", "a", "b"]), (0.5, ["a", "b", "a"])])
def test_switching_always_makes_progress(b_arrives, order):
    """Simulate the livelock's reproduction with the pure functions: A
    loaded, two requests queued for A (at 0 and 1), one for B, one model at
    a time. Every request is served, in arrival order, with no more loads
    than the switches that order needs, plus the first."""
    a, b = model("a", R, queued=2, arrived=0.0, started=1), model("b", queued=1, arrived=b_arrives)
    served, loads = [], 1
    for _ in range(50):
        models = [a, b]
        for m in models:  # dispatch, as the scheduler does, before admission
            w = next((w for w in m.workers if w.state == R), None)
            if w and m.queue and not policy.must_yield(m, models, 1, None):
                served.append((m.name, m.queue.popleft().rid))
                m.started_since_ready += 1
        waiting = sorted((m for m in models if m.wants_worker), key=lambda m: m.first_arrival())
        for m in waiting:
            admission = policy.admit(m, models, 1, None)
            for name in admission.evict:
                next(x for x in models if x.name == name).workers.clear()
            if admission.evict:
                admission = policy.admit(m, models, 1, None)
            if admission.spawn:
                m.workers.append(Worker(key=m.name, model=m, spec=m.spec, handle=None, state=R))
                m.started_since_ready, loads = 0, loads + 1
        if not a.queue and not b.queue:
            break
    assert [name for name, _ in served] == order  # in arrival order, nothing lost
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert loads == switches + 1


def test_loaded_model_yields_to_one_waiting_longer():
    a, b = model("a", R, queued=1, arrived=10.0), model("b", queued=1, arrived=5.0)
    assert policy.must_yield(a, [a, b], max_loaded=1, budget=None)
    assert not policy.must_yield(a, [a, b], max_loaded=2, budget=None)  # b can load beside it
    later = model("b", queued=1, arrived=20.0)
    assert not policy.must_yield(a, [a, later], max_loaded=1, budget=None)


def test_memory_budget_evicts_until_it_fits():
    a, b, c = model("a", R, last_used=1, mib=300), model("b", R, last_used=2, mib=300), model("c", R, last_used=3, mib=300)
    target = model("t", queued=1, mib=500)
    admission = policy.admit(target, [a, b, c, target], max_loaded=5, budget=1000 * MiB)
    assert admission.evict == ("a", "b")


def test_too_big_for_the_budget_is_refused_without_evicting():
    a = model("a", R, mib=100)
    target = model("t", queued=1, mib=5000)
    admission = policy.admit(target, [a, target], max_loaded=5, budget=1000 * MiB)
    assert admission.refuse and "5000 MiB" in admission.refuse and not admission.evict


def test_grown_worker_counts_at_its_real_size():
    a = model("a", R, mib=100, rss_mib=900)
    target = model("t", queued=1, mib=200)
    assert policy.admit(target, [a, target], max_loaded=5, budget=1000 * MiB).evict == ("a",)


def test_outdated_workers_of_the_model_itself_hold_their_memory():
    # A new context length: the old worker stays until it exits.
    m = model("a", R, mib=600, context=512)
    m.spec = ModelSpec(name="a", path="/m/a", backend="llama.cpp", context_length=4096)
    m.queue.append(request(1))
    assert m.wants_worker and m.workers[0].stale
    assert policy.admit(m, [m], max_loaded=1, budget=1000 * MiB) == policy.Admission(spawn=False)
    assert policy.admit(m, [m], max_loaded=1, budget=2000 * MiB) == policy.Admission(spawn=True)


def test_replicas_only_where_they_fit_without_evicting():
    m = model("a", R, queued=3)
    m.replicas = 2
    other = model("b", R)
    assert policy.may_add_replica(m, [m], max_loaded=1, budget=None)
    m.workers[0].capacity = 4
    assert not policy.may_add_replica(m, [m], max_loaded=1, budget=None)  # its worker takes all three
    m.workers[0].capacity = 1
    assert not policy.may_add_replica(m, [m, other], max_loaded=1, budget=None)
    assert not policy.may_add_replica(m, [m], max_loaded=1, budget=150 * MiB)


def test_dispatch_room():
    m = model("a", R)
    w = m.workers[0]
    assert policy.dispatch_room(w) == 1
    w.capacity = 4
    w.running[1] = request(1)
    assert policy.dispatch_room(w) == 3
    w.capacity = 1
    w.running = {1: request(1, max_tokens=8)}
    assert policy.dispatch_room(w) == 1  # one more behind a short request
    w.running = {1: request(1, max_tokens=500)}
    assert policy.dispatch_room(w) == 0  # never behind a long answer
    w.state = State.LOADING
    assert policy.dispatch_room(w) == 0


def test_threads_split_among_replicas():
    assert policy.threads_per_worker(8, 1, None) is None
    assert policy.threads_per_worker(8, 3, None) == 2
    assert policy.threads_per_worker(2, 4, None) == 1
    assert policy.threads_per_worker(8, 3, 5) == 5


def test_which_exits_count_as_crashes():
    assert policy.counts_as_crash(State.BUSY, killed_for_a_reason=False)
    assert policy.counts_as_crash(State.LOADING, killed_for_a_reason=False)
    assert not policy.counts_as_crash(State.STOPPING, killed_for_a_reason=False)
    assert not policy.counts_as_crash(State.BUSY, killed_for_a_reason=True)


def test_expiry():
    m = model("a", R)
    m.expires_at = policy.expiry(30.0, now=100.0)
    assert not policy.expired(m, 129.9)
    assert policy.expired(m, 130.0)
    m.workers[0].running[1] = request(1)
    assert not policy.expired(m, 500.0)  # never while serving
    assert policy.expiry(None, now=100.0) is None


def test_hung():
    assert not policy.hung(last_heard=10.0, now=14.0, silence_limit=5.0)
    assert policy.hung(last_heard=10.0, now=15.5, silence_limit=5.0)


def test_overgrown_only_when_the_budget_is_exceeded():
    fat, fine = model("a", R, mib=100, rss_mib=400), model("b", R, mib=100, rss_mib=110)
    assert policy.overgrown([fat, fine], budget=1000 * MiB, growth_limit=1.5) == []
    assert policy.overgrown([fat, fine], budget=300 * MiB, growth_limit=1.5) == [fat.workers[0]]


def test_auto_budget():
    assert policy.auto_budget(available=1000, held_by_workers=300) == 1300


def test_crash_back_off_and_its_history_is_pruned():
    r = Restarter(limit=3, window=60, backoff=60)
    for t in (0, 10, 20):
        r.failed("m", t)
    assert r.backoff_left("m", 30) == 50
    assert r.backoff_left("m", 81) is None
    assert r.backoff_left("other", 30) is None
    r.failed("m", 500)
    assert list(r.failures["m"]) == [500]  # old entries went


def test_spawn_storm_is_a_policy_bug_that_backs_off():
    r = Restarter(limit=3, window=60, backoff=60, spawn_limit=5)
    for t in range(5):
        r.spawned("m", t)
    assert r.backoff_left("m", 5) is None
    r.spawned("m", 5)
    assert r.backoff_left("m", 6) == 59 and "without serving" in r.why("m")
    r2 = Restarter(spawn_limit=5)
    for t in range(10):
        r2.spawned("m", t)
        r2.served("m")  # serving in between is not a storm
    assert r2.backoff_left("m", 10) is None


def test_a_request_that_never_started_is_retried_once_after_a_crash():
    req = request(1)
    assert policy.retry_after_crash(req, killed_for_a_reason=False)
    assert not policy.retry_after_crash(req, killed_for_a_reason=True)  # e.g. stopped for memory
    req.retried = True
    assert not policy.retry_after_crash(req, killed_for_a_reason=False)
    started = request(2)
    started.first_token = 1.0
    assert not policy.retry_after_crash(started, killed_for_a_reason=False)


def test_a_batching_worker_keeps_one_seat_for_another_client():
    assert policy.sequences_per_worker(True, None, 4) == 5  # four for anyone, one kept
    assert policy.sequences_per_worker(True, 1, 4) == 1  # one at a time, as asked
    assert policy.sequences_per_worker(False, 8, 4) == 1  # ctransformers decodes one
    m = model("a", R)
    w = m.workers[0]
    w.capacity = 5
    for i in range(4):
        w.running[i] = request(i, client=b"batch")
    m.queue.append(request(10, client=b"batch"))
    assert policy.lane_kept(w, m)  # the batch's fifth prompt waits ...
    m.queue = type(m.queue)()
    m.queue.append(request(11, client=b"chat"))
    assert not policy.lane_kept(w, m)  # ... a chat takes the seat at once


def test_busy_workers_share_the_cores():
    assert policy.thread_budget(busy=1, cores=2, configured=None) == 2
    assert policy.thread_budget(busy=2, cores=2, configured=None) == 1  # never 4 spinning threads on 2 cores
    assert policy.thread_budget(busy=3, cores=2, configured=None) == 1
    assert policy.thread_budget(busy=1, cores=8, configured=3) == 3  # what the entry says, at most
