"""Races the supervisor must survive, played in a chosen order against its
real event loop, with workers the test plays itself (``fake_workers``): no
processes, no sleeps."""

from __future__ import annotations

import pytest

from corral.configs.settings import load_settings
from corral.supervisor import client_ops, protocol
from corral.supervisor.server import Supervisor
from fake_workers import FakeLauncher, RawClient, run_until, serve_until


@pytest.fixture
def loop(tiny_catalog, monkeypatch):
    """A supervisor on fake workers, a raw client, and the tiny catalog."""

    def make(**env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        launcher = FakeLauncher(settings)
        sup = Supervisor(settings, launcher=launcher)
        client = RawClient(settings)
        made.append((sup, launcher, client))
        return sup, launcher, client

    made: list = []
    yield make
    for sup, launcher, client in made:
        client.close()
        launcher.close()
        sup.close()


LLAMA, GPT2 = "test/tiny-llama", "test/tiny-gpt2"


def serve_one(sup, worker, client, id):
    """Let ``worker`` answer the next work it gets; the client sees it end."""
    work = run_until(sup, lambda: worker.recv())
    worker.answer(work)
    return run_until(sup, lambda: client.ended(id))


def until_told_to_stop(sup, worker) -> None:
    """Turn the loop until ``worker`` has received its shutdown command."""
    run_until(sup, lambda: worker.asked_to_stop or isinstance(worker.recv(), protocol.WorkShutdown))


def first_work(sup, launcher, client, prompt: str = "hi"):
    """Send one request; the first worker starts, is ready, and gets it.
    Returns (request id, worker, the work it got)."""
    id = client.send("generate", model=LLAMA, prompt=prompt)
    run_until(sup, lambda: launcher.spawned)
    worker = launcher.spawned[0]
    worker.ready()
    return id, worker, run_until(sup, lambda: worker.recv())


def next_worker_serves(sup, launcher, client, id, count: int) -> None:
    """The ``count``-th worker starts, becomes ready and answers request ``id``."""
    run_until(sup, lambda: len(launcher.spawned) == count)
    launcher.spawned[count - 1].ready()
    assert isinstance(serve_one(sup, launcher.spawned[count - 1], client, id), protocol.Done)


def test_request_arriving_while_its_model_is_stopping(loop):
    # llama-swap #946: an idle unload racing a new request.
    sup, launcher, client = loop(CORRAL_IDLE_TIMEOUT="0")
    first = client.send("generate", model=LLAMA, prompt="hi")
    next_worker_serves(sup, launcher, client, first, 1)
    # keep-alive 0: the worker is told to stop ...
    run_until(sup, lambda: isinstance(launcher.spawned[0].recv(), protocol.WorkShutdown))
    # ... and a request arrives before it has exited.
    second = client.send("generate", model=LLAMA, prompt="again")
    sup.step(20)
    assert client.ended(second) is None  # waiting, not refused, not lost
    launcher.spawned[0].exit()
    next_worker_serves(sup, launcher, client, second, 2)


def test_worker_crash_during_load(loop):
    sup, launcher, client = loop()
    id = client.send("generate", model=LLAMA, prompt="hi")
    run_until(sup, lambda: launcher.spawned)
    launcher.spawned[0].exit(1)
    error = run_until(sup, lambda: client.ended(id))
    assert isinstance(error, protocol.Error) and error.code == "model_load_failed"
    again = client.send("generate", model=LLAMA, prompt="hi")  # a fresh worker for the next one
    next_worker_serves(sup, launcher, client, again, 2)


def test_cancel_of_a_queued_request(loop):
    sup, launcher, client = loop()
    running = client.send("generate", model=LLAMA, prompt="long")
    queued = client.send("generate", model=LLAMA, prompt="never")
    run_until(sup, lambda: launcher.spawned)
    worker = launcher.spawned[0]
    worker.ready()
    work = run_until(sup, lambda: worker.recv())
    assert work.request.id == running
    client.send("cancel", id=queued)
    done = run_until(sup, lambda: client.ended(queued))
    assert isinstance(done, protocol.Done) and done.stopped == "cancelled"
    worker.answer(work)
    assert isinstance(run_until(sup, lambda: client.ended(running)), protocol.Done)
    sup.step(20)
    assert worker.recv() is None  # the cancelled one never reached the worker


def test_switch_while_a_replica_loads(loop):
    sup, launcher, client = loop(CORRAL_REPLICAS="2")
    a1, a2 = client.send("generate", model=LLAMA, prompt="a1"), client.send("generate", model=LLAMA, prompt="a2")
    run_until(sup, lambda: len(launcher.spawned) == 2)  # both replicas start
    first, replica = launcher.spawned
    first.ready()
    work = run_until(sup, lambda: first.recv())
    b = client.send("generate", model=GPT2, prompt="b")  # another model, while the replica still loads
    first.answer(work)
    sup.step(20)
    replica.ready()
    serve_until(sup, [first, replica], lambda: client.ended(a1) and client.ended(a2))
    # A's workers make room for B only once both are idle; B is then served.
    serve_until(sup, [first, replica], lambda: first.asked_to_stop and replica.asked_to_stop)
    assert len(launcher.spawned) == 2  # B waits for the room, it does not overcommit
    first.exit()
    replica.exit()
    run_until(sup, lambda: len(launcher.spawned) == 3)
    sup.step(20)
    assert len(launcher.spawned) == 3  # one worker for B's one request: no replica before it is needed
    launcher.spawned[2].ready()
    serve_until(sup, launcher.spawned[2:], lambda: client.ended(b))
    assert all(isinstance(client.ended(i), protocol.Done) for i in (a1, a2, b))


def test_request_arriving_during_shutdown(loop):
    sup, launcher, client = loop()
    loaded = client.send("load", model=LLAMA)
    run_until(sup, lambda: launcher.spawned)
    launcher.spawned[0].ready()
    run_until(sup, lambda: client.ended(loaded))
    bye = client.send("shutdown")
    run_until(sup, lambda: isinstance(launcher.spawned[0].recv(), protocol.WorkShutdown))
    late = client.send("generate", model=LLAMA, prompt="too late")
    error = run_until(sup, lambda: client.ended(late))
    assert isinstance(error, protocol.Error) and error.code == "shutting_down"
    launcher.spawned[0].exit()
    run_until(sup, lambda: client.ended(bye))
    assert not sup.running


def test_a_reused_request_id_is_refused_and_the_first_goes_on(loop):
    sup, launcher, client = loop()
    client.send("generate", id=7, model=LLAMA, prompt="first")
    client.send("generate", id=7, model=LLAMA, prompt="second")
    error = run_until(sup, lambda: client.ended(7))
    assert isinstance(error, protocol.Error) and error.code == "bad_request" and "already in flight" in error.message
    run_until(sup, lambda: launcher.spawned)
    launcher.spawned[0].ready()
    work = run_until(sup, lambda: launcher.spawned[0].recv())
    assert work.request.prompt == "first"
    launcher.spawned[0].answer(work)
    run_until(sup, lambda: isinstance(client.last(7), protocol.Done))
    assert [type(m).__name__ for m in client.replies[7]] == ["Error", "Token", "Done"]


def test_an_exception_inside_the_loop_ends_that_request_only(loop, monkeypatch):
    sup, launcher, client = loop()

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client_ops, "on_unload", broken)
    id = client.send("unload", all=True)
    error = run_until(sup, lambda: client.ended(id))
    assert isinstance(error, protocol.Error) and error.code == "internal_error"
    status = client.send("status")
    assert isinstance(run_until(sup, lambda: client.ended(status)), protocol.Result)


def test_a_worker_frame_that_breaks_handling_fails_its_request(loop, monkeypatch):
    from corral.supervisor import lifecycle

    sup, launcher, client = loop()
    id, worker, work = first_work(sup, launcher, client, "hi")
    monkeypatch.setattr(lifecycle, "finish", lambda *args: 1 / 0)
    worker.send(protocol.DONE, rid=work.rid, id=work.request.id, stopped="stop")
    error = run_until(sup, lambda: client.ended(id))
    assert isinstance(error, protocol.Error) and error.code == "internal_error"


def test_bad_worker_frames_are_dropped_not_forwarded(loop):
    sup, launcher, client = loop()
    id, worker, work = first_work(sup, launcher, client, "hi")
    worker.data.send(b"\x81\xa2ev\xa5token")  # no rid, no text
    worker.send(protocol.TOKEN, rid=work.rid, id="someone else", text="stolen")  # not its request's id
    worker.answer(work, text="mine")
    run_until(sup, lambda: client.ended(id))
    texts = [m.text for m in client.replies[id] if isinstance(m, protocol.Token)]
    assert texts == ["mine"]


def test_an_unloaded_worker_that_exits_before_its_last_frames_ends_them_as_cancelled(loop):
    sup, launcher, client = loop()
    id, worker, work = first_work(sup, launcher, client, "long")
    worker.send(protocol.TOKEN, rid=work.rid, id=work.request.id, text="partial")
    client.send("unload", all=True)
    until_told_to_stop(sup, worker)
    worker.exit()  # its final "done, cancelled" never arrives
    done = run_until(sup, lambda: client.ended(id))
    assert isinstance(done, protocol.Done) and done.stopped == "cancelled"
    assert len(launcher.spawned) == 1  # not taken for a crash: nothing restarts it


def test_unload_is_answered_once_its_worker_has_exited(loop):
    # Docker's `model unload` returns when the model is gone: a `ps` right
    # after it must not list a worker still on its way out.
    sup, launcher, client = loop()
    id, worker, work = first_work(sup, launcher, client)
    worker.answer(work)
    run_until(sup, lambda: client.ended(id))
    unload = client.send("unload", model=LLAMA)
    until_told_to_stop(sup, worker)
    sup.step(20)
    assert client.ended(unload) is None  # held while the worker is still there
    ps = client.send("ps")
    assert [m["model"] for m in run_until(sup, lambda: client.ended(ps)).result] == [LLAMA]
    worker.exit()
    done = run_until(sup, lambda: client.ended(unload))
    assert done.unloaded == [LLAMA]
    ps = client.send("ps")
    assert run_until(sup, lambda: client.ended(ps)).result == []
    nothing = client.send("unload", model=LLAMA)  # nothing to wait for: answered at once
    assert run_until(sup, lambda: client.ended(nothing)).unloaded == []


def test_a_chat_joins_a_worker_full_of_batch_prompts_at_once(loop):
    sup, launcher, client = loop()
    batch = [client.send("generate", model=LLAMA, prompt=f"b{i}") for i in range(10)]
    run_until(sup, lambda: launcher.spawned)
    worker = launcher.spawned[0]
    worker.ready(parallel=5)  # four seats for anyone, one kept
    taken = [run_until(sup, lambda: worker.recv()) for _ in range(4)]
    sup.step(20)
    assert worker.recv() is None  # the batch never takes the last seat
    other = RawClient(sup.settings)
    try:
        chat = other.send("generate", model=LLAMA, prompt="hi")
        work = run_until(sup, lambda: worker.recv())
        assert work.request.prompt == "hi"  # at once, beside the four running
        worker.answer(work)
        assert isinstance(run_until(sup, lambda: other.ended(chat)), protocol.Done)
    finally:
        other.close()
    for work in taken:
        worker.answer(work)
    serve_until(sup, [worker], lambda: all(client.ended(i) for i in batch))
