"""Pure policy: which models make room, whether a worker may start, how much
work a worker takes, when a model expires. Functions of the table and the
time only: they neither log nor mutate, so tests call them with hand-built
models and a made-up clock. The event loop applies their answers.

The rule that keeps switching live (no livelock): a model whose worker has
just become ready starts at least one request before it yields its place or
can be evicted, and among models waiting for room the one that has waited
longest goes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from corral.supervisor.table import Model, Request, State, Worker

# A worker of capacity 1 may hold one more request behind the one it is
# generating, so it never idles between short requests; only behind
# requests of at most PIPELINE_MAX_TOKENS tokens: behind a long answer, a
# newcomer from another client must wait for the running request alone.
PIPELINE_DEPTH = 2
PIPELINE_MAX_TOKENS = 16


@dataclass(frozen=True)
class Admission:
    spawn: bool  # start the target's worker now
    evict: tuple[str, ...] = ()  # stop these models first; spawn once they are gone
    refuse: str | None = None  # it can never fit: why, for the error message


def evictable(model: Model, for_model: Model) -> bool:
    """A model that may be stopped to make room for ``for_model``: loaded
    and doing nothing; if it has work waiting, only once it has started a
    request since it became ready, and only for a model that has waited
    longer than its next request."""
    if not model.workers or model.running:
        return False
    if any(w.state != State.READY for w in model.workers):
        return False
    if not model.has_work:
        return True
    if model.started_since_ready < 1 or model.load_waiters:
        return False
    return not model.queue or for_model.first_arrival() < model.queue.peek().arrived


def admit(target: Model, models: Iterable[Model], max_loaded: int, budget: int | None) -> Admission:
    """May ``target`` get a worker now; if not, whom to stop for it, or why
    it can never fit.

    ``budget`` is the memory for all models (None: unchecked); each worker
    holds ``held_bytes`` of it and the target's new worker needs
    ``need_bytes``. A model serving a request is never stopped to make room.
    Among the others, those with nothing queued go first, least recently
    used first.
    """
    if target.ignore_memory_check:
        budget = None
    models = list(models)
    # The target's own outdated workers (a new context length) count too:
    # they hold memory until they exit.
    workers = [w for m in models for w in m.workers]
    # Workers already stopping free their place when they exit.
    staying = [w for w in workers if w.state != State.STOPPING]

    def fits(loaded: list[Worker]) -> bool:
        # The limit counts models: a model's replicas are one of them.
        if len({w.model.name for w in loaded} - {target.name}) >= max_loaded:
            return False
        return budget is None or sum(w.held_bytes for w in loaded) + target.need_bytes <= budget

    if fits(workers):
        return Admission(spawn=True)
    if fits(staying):
        return Admission(spawn=False)
    candidates = [m for m in models if m is not target and evictable(m, target)]
    candidates.sort(key=lambda m: (m.has_work, m.last_used))
    victims: list[Model] = []
    for victim in candidates:
        victims.append(victim)
        if fits([w for w in staying if w.model not in victims]):
            return Admission(spawn=False, evict=tuple(v.name for v in victims))
    if budget is not None and target.need_bytes > budget:
        return Admission(spawn=False, refuse=refusal(target, budget, budget))
    # Busy models will finish; what is left is waiting for them.
    return Admission(spawn=False)


def may_add_replica(model: Model, models: Iterable[Model], max_loaded: int, budget: int | None) -> bool:
    """Another worker for a model that already has one, when more requests
    wait than its workers can take, and only where it fits as things stand:
    a replica never evicts anything."""
    fresh = model.fresh_workers
    if len(fresh) >= model.replicas or len(model.queue) <= sum(w.capacity - len(w.running) for w in fresh):
        return False
    return admit(model, models, max_loaded, budget) == Admission(spawn=True)


def refusal(target: Model, available: int, budget: int) -> str:
    mib = 1024 * 1024
    return (
        f"{target.name} needs about {target.need_bytes / mib:.0f} MiB; {available / mib:.0f} MiB available "
        f"(budget {budget / mib:.0f} MiB). Use --ignore-runtime-memory-check to load it anyway."
    )


def must_yield(model: Model, models: Iterable[Model], max_loaded: int, budget: int | None) -> bool:
    """Hold back ``model``'s next request while another model, waiting for
    room that ``model`` holds, has waited longer: a steady stream for one
    model must not starve another. Never before the model has started one
    request since it became ready, so every load makes progress."""
    if not model.queue or model.started_since_ready < 1:
        return False
    models = list(models)
    nxt = model.queue.peek().arrived
    return any(
        other is not model
        and other.wants_worker
        and other.first_arrival() < nxt
        and not admit(other, models, max_loaded, budget).spawn
        for other in models
    )


def _is_short(req: Request) -> bool:
    return 0 < req.max_tokens <= PIPELINE_MAX_TOKENS


def sequences_per_worker(batching: bool, configured: int | None, default: int) -> int:
    """Sequences a worker decodes together: what is configured (else the
    backend's measured default) for anyone, plus one kept free for a client
    that has nothing running, where the backend batches more than one: a
    thousand-prompt batch then never holds the last seat, and another
    client's chat joins at the next token step."""
    if not batching:
        return 1
    n = configured or default
    return n + 1 if n > 1 else n


def lane_kept(worker: Worker, model: Model) -> bool:
    """Whether ``worker``'s last free seat must wait for a client with
    nothing running on ``model`` (the next in line has something running)."""
    if worker.capacity < 3 or worker.capacity - len(worker.running) != 1 or not model.queue:
        return False
    client = model.queue.peek().client
    return any(r.client == client for w in model.workers for r in w.running.values())


def dispatch_room(worker: Worker) -> int:
    """How many more queued requests ``worker`` takes now."""
    if worker.state not in (State.READY, State.BUSY) or worker.stale:
        return 0
    free = worker.capacity - len(worker.running)
    if free <= 0 and worker.capacity == 1 and len(worker.running) < PIPELINE_DEPTH:
        return 1 if all(_is_short(r) for r in worker.running.values()) else 0
    return max(0, free)


def threads_per_worker(cores: int, replicas: int, configured: int | None) -> int | None:
    """Engine threads for each of a model's workers: what its entry says, or
    the cores shared among its replicas (None: the backend's default)."""
    if configured:
        return configured
    return max(1, cores // replicas) if replicas > 1 else None


def thread_budget(busy: int, cores: int, configured: int | None) -> int:
    """Engine threads for a worker while ``busy`` workers decode at once:
    never more decoding threads than cores. ggml's threads spin while they
    wait, so two workers each running a thread per core decoded 5x slower
    together than apart (bench: two_models_ratio)."""
    return max(1, min(configured or cores, cores // max(1, busy)))


def overgrown(models: Iterable[Model], budget: int, growth_limit: float) -> list[Worker]:
    """Workers to stop because the budget is exceeded and they have grown well
    past their estimate (the others are behaving as announced)."""
    loaded = [w for m in models for w in m.workers if w.rss_bytes]
    if sum(w.rss_bytes for w in loaded) <= budget:
        return []
    return [w for w in loaded if w.need_bytes and w.rss_bytes > w.need_bytes * growth_limit and w.state != State.STOPPING]


def retry_after_crash(req: Request, killed_for_a_reason: bool) -> bool:
    """A request whose worker died before it produced anything runs again on
    a fresh worker, once (a prompt that itself kills workers fails the
    second time)."""
    return req.first_token is None and not req.retried and not killed_for_a_reason


def auto_budget(available: int, held_by_workers: int) -> int:
    """The budget when none is configured: what the machine has available
    plus what our own workers already hold."""
    return available + held_by_workers


def counts_as_crash(was: State, killed_for_a_reason: bool) -> bool:
    """An exit that was not asked for, and not the supervisor's own doing for
    a reason the user was told (memory), counts toward back-off."""
    return was != State.STOPPING and not killed_for_a_reason


def expiry(keep_alive: float | None, now: float) -> float | None:
    """When a model that just finished its last request should unload."""
    return None if keep_alive is None else now + keep_alive


def expired(model: Model, now: float) -> bool:
    return model.idle and model.expires_at is not None and now >= model.expires_at


def hung(last_heard: float, now: float, silence_limit: float) -> bool:
    return now - last_heard > silence_limit
