"""What the supervisor does with each client request. Every request ends in
exactly one way: its replies end with ``done``, ``result`` or ``error``."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from corral.configs import catalog
from corral.supervisor import lifecycle, protocol
from corral.supervisor.errors import BadRequest, Busy, CorralError, InternalError, ShuttingDown
from corral.supervisor.memory import estimate_memory, worker_sequences
from corral.supervisor.reports import describe_models, supervisor_facts
from corral.supervisor.table import HeldReply, Model, Request, State

if TYPE_CHECKING:
    from corral.supervisor.server import Supervisor


def handle(sup: "Supervisor", client: bytes, msg: protocol.ClientRequest) -> None:
    if isinstance(msg, protocol.ModelRequest):
        on_model_request(sup, client, msg)
    elif isinstance(msg, protocol.Cancel):
        on_cancel(sup, client, msg)
    elif isinstance(msg, protocol.Unload):
        on_unload(sup, client, msg)
    elif isinstance(msg, protocol.Ps):
        sup.reply(client, protocol.event(protocol.RESULT, id=msg.id, result=describe_models(sup.table.models.values())))
    elif isinstance(msg, protocol.Status):
        facts = supervisor_facts(sup.settings, sup.started, sup.started_wall, sup.table, sup.gateway_facts())
        sup.reply(client, protocol.event(protocol.RESULT, id=msg.id, result=facts))
    elif isinstance(msg, protocol.Shutdown):
        sup.shutdown_requests.append((client, msg.id))
        sup.begin_shutdown()


def _capable(spec: catalog.ModelSpec, msg: protocol.ClientRequest) -> None:
    """Refuse at once what the model's backend cannot do."""
    if isinstance(msg, protocol.Embed) and spec.backend not in catalog.EMBEDDING_BACKENDS:
        raise BadRequest(f"{spec.name} runs on the {spec.backend} backend, which has no embeddings")
    if (isinstance(msg, protocol.Tokenize) or getattr(msg, "tokens", None)) and spec.backend not in catalog.TOKENIZER_BACKENDS:
        raise BadRequest(f"{spec.name} runs on the {spec.backend} backend, which takes and gives text, not token ids")
    options = getattr(msg, "options", None)
    if options is not None and (options.grammar or options.json_schema) and spec.backend not in catalog.GRAMMAR_BACKENDS:
        raise BadRequest(f"{spec.name} runs on the {spec.backend} backend, which cannot constrain output to a grammar or JSON schema")
    if options is not None and options.logprobs is not None and spec.backend not in catalog.LOGPROBS_BACKENDS:
        raise BadRequest(f"{spec.name} runs on the {spec.backend} backend, which cannot report log probabilities; leave logprobs unset")


def estimate(sup: "Supervisor", spec: catalog.ModelSpec):
    return estimate_memory(spec, parallel=worker_sequences(spec, sup.settings.parallel))


def _model_for(sup: "Supervisor", msg: protocol.Generate | protocol.Chat | protocol.Load | protocol.Embed | protocol.Tokenize) -> Model:
    """The table's entry for the requested model, made if it is new. Nothing
    is changed until every check has passed."""
    spec = catalog.resolve(msg.model, sup.settings, model_type=msg.model_type, names_only=msg.names_only)
    if msg.context_length is not None:
        spec = dataclasses.replace(spec, context_length=msg.context_length)
    _capable(spec, msg)
    model = sup.table.models.get(spec.name)
    if model is None:
        lifecycle.check_backoff(sup, spec.name)
        # Reading the header first refuses a corrupt file before anything is
        # evicted for it.
        model = Model(spec=spec, estimate=estimate(sup, spec), keep_alive=sup.settings.idle_timeout,
                      replicas=spec.replicas or sup.settings.replicas)
        sup.table.models[spec.name] = model
    elif msg.context_length is not None and spec.context_length != model.spec.context_length:
        # A load-time setting changed: new workers get it; the old ones
        # finish what they hold, then stop (scheduler).
        model.spec, model.estimate = spec, estimate(sup, spec)
    return model


def on_model_request(sup: "Supervisor", client: bytes,
                     msg: protocol.Generate | protocol.Chat | protocol.Load | protocol.Embed | protocol.Tokenize) -> None:
    if sup.shutting_down:
        raise ShuttingDown("the supervisor is shutting down; run the command again in a moment")
    if sup.table.find(client, msg.id) is not None:
        raise BadRequest(f"request id {msg.id!r} is already in flight on this connection; use a new id")
    model = _model_for(sup, msg)
    if msg.keep_alive is not None:
        model.keep_alive = None if msg.keep_alive < 0 else float(msg.keep_alive)
    req = Request(sup.table.new_rid(), client, msg.id, msg, time.monotonic(), model=model.name)
    ready = [w for w in model.fresh_workers if w.state in (State.READY, State.BUSY)]
    req.caused_load = not ready
    if isinstance(msg, protocol.Load):
        if ready:
            sup.reply(client, lifecycle.load_done(req, ready[0]))
            return
        model.load_waiters.append(req)
    else:
        if len(model.queue) >= sup.settings.max_queue:
            raise Busy(f"{model.name} has {len(model.queue)} requests waiting; try again later")
        model.queue.append(req)
    if client:  # a preload is no client's request
        sup.table.requests_total += 1
    sup.table.add(req)
    if req.debug:
        lifecycle.note(sup, req, f"queued for {model.name} ({model.state.value}; {len(model.queue)} waiting)")
    sup.schedule()


def on_cancel(sup: "Supervisor", client: bytes, msg: protocol.Cancel) -> None:
    req = sup.table.find(client, msg.id)
    if req is None:
        return  # already finished: its stream has ended anyway
    model = sup.table.models.get(req.model)
    for worker in model.workers if model else ():
        if req.rid in worker.running:
            sup.send_worker(worker, protocol.command(protocol.CANCEL, rid=req.rid))
            return
    # Not started yet: take it out of line and end its stream here.
    if model is not None:
        if req in model.queue:
            model.queue.remove(req)
        if req in model.load_waiters:
            model.load_waiters.remove(req)
    sup.table.forget(req)
    sup.reply(client, protocol.event(protocol.DONE, id=req.id, stopped="cancelled"))
    sup.schedule()


def on_unload(sup: "Supervisor", client: bytes, msg: protocol.Unload) -> None:
    if msg.all:
        targets = list(sup.table.models.values())
    elif msg.model is not None:
        name = catalog.canonical_name(msg.model)
        if name not in sup.table.models:
            try:  # a path given relatively by the user was made absolute by the client
                name = catalog.resolve(msg.model, sup.settings).name
            except CorralError:
                pass
        targets = [sup.table.models[name]] if name in sup.table.models else []
    else:
        raise BadRequest("unload needs a model or all")
    stopping = {w.identity for m in targets for w in m.workers}
    for model in targets:
        lifecycle.unload(sup, model, "unloaded")
    done = protocol.event(protocol.DONE, id=msg.id, unloaded=sorted(m.name for m in targets))
    if stopping:
        sup.table.held_replies.append(HeldReply(client, done, stopping))
    else:
        sup.reply(client, done)
    sup.schedule()


def abandon(sup: "Supervisor", client: bytes, id) -> None:
    """End a request whose handling failed unexpectedly, wherever it got."""
    req = sup.table.find(client, id)
    if req is not None:
        model = sup.table.models.get(req.model)
        if model is not None and req in model.queue:
            model.queue.remove(req)
        if model is not None and req in model.load_waiters:
            model.load_waiters.remove(req)
        sup.table.forget(req)
    sup.reply(client, protocol.error(id, InternalError("corral hit an internal error with this request; "
                                                      "see `corral logs` and report it")))
