"""Applying the policy to the table: which worker takes which request, which
model gets a worker, who makes room. Every decision comes from a pure
function in :mod:`corral.supervisor.policy`; this module only carries it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.supervisor import lifecycle, policy, protocol
from corral.supervisor.errors import CorralError, InsufficientMemory
from corral.supervisor.logs import get_logger
from corral.supervisor.table import Model, State

if TYPE_CHECKING:
    from corral.supervisor.server import Supervisor

log = get_logger()


def schedule(sup: "Supervisor") -> None:
    """Give queued requests to free workers, give waiting models a worker
    when there is room, make room when there is not."""
    models = sup.table.models
    waiting = sorted((m for m in models.values() if m.wants_worker), key=lambda m: m.first_arrival())
    # The budget is only needed to weigh one model against another.
    budget = sup.budget() if waiting else None
    # Work first: a model that has just become ready starts its requests
    # before anything can count it as idle and evict it.
    for pipelining in (False, True):
        for model in list(models.values()):
            dispatch(sup, model, budget, pipelining)
    for model in list(models.values()):
        for worker in model.workers:
            if worker.stale and worker.state == State.READY and not worker.running:
                lifecycle.stop(sup, worker)  # started with an old context length
    for model in waiting:
        admit(sup, model, budget)
    for model in list(models.values()):
        if model.workers and policy.may_add_replica(model, models.values(), sup.settings.max_loaded_models, budget):
            lifecycle.spawn(sup, model)
    for name, model in list(models.items()):
        if not model.workers and not model.has_work:
            del models[name]
    share_cores(sup)


def share_cores(sup: "Supervisor") -> None:
    """Give each busy worker its share of the cores, from the next step on."""
    workers = sup.table.all_workers()
    busy = sum(1 for w in workers if w.state == State.BUSY)
    for worker in workers:
        if worker.threads and worker.state in (State.READY, State.BUSY):
            target = policy.thread_budget(busy, lifecycle.CORES,
                                          policy.threads_per_worker(lifecycle.CORES, worker.model.replicas, worker.spec.threads))
            if target != worker.threads:
                worker.threads = target
                sup.send_worker(worker, protocol.command("threads", threads=target), data=True)


def dispatch(sup: "Supervisor", model: Model, budget: int | None, pipelining: bool) -> None:
    max_loaded = sup.settings.max_loaded_models
    for worker in model.workers:
        room = policy.dispatch_room(worker)
        if not pipelining:
            room = min(room, worker.capacity - len(worker.running))
        while room > 0 and model.queue:
            if policy.must_yield(model, sup.table.models.values(), max_loaded, budget):
                return
            if policy.lane_kept(worker, model):
                break
            lifecycle.send_work(sup, worker, model.queue.popleft())
            room -= 1


def admit(sup: "Supervisor", model: Model, budget: int | None) -> None:
    if not model.wants_worker:
        return  # served or failed while this pass ran
    try:
        lifecycle.check_backoff(sup, model.name)
    except CorralError as exc:
        lifecycle.fail_waiting(sup, model, exc)
        return
    admission = policy.admit(model, sup.table.models.values(), sup.settings.max_loaded_models, budget)
    if admission.refuse:
        log.info("refused: not enough memory", model=model.name, need=model.need_bytes)
        lifecycle.fail_waiting(sup, model, InsufficientMemory(admission.refuse))
        return
    for name in admission.evict:
        log.info("evicting to make room", model=name, for_model=model.name)
        for worker in sup.table.models[name].workers:
            lifecycle.stop(sup, worker)
    if admission.spawn:
        lifecycle.spawn(sup, model)
