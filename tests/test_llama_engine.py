"""The llama.cpp engine in-process: continuous batching, cancel, chunked
prefill, seeded prefix reuse, grammars, embeddings and sampling defaults.

The tiny random-weight GGUF serves where no real language is needed; the
tests on SmolLM2 are marked e2e.
"""

from __future__ import annotations

import json

import llama_cpp as L
import pytest

from corral.configs.catalog import resolve
from corral.configs.settings import load_settings
from corral.workers.backend import SAMPLING_DEFAULTS, Sampling, Usage
from corral.workers.llama_cpp_backend import LlamaCppBackend
from corral.workers.llama_sampling import model_sampling_defaults, resolve_sampling

PROMPTS = ["hello world", "the tiny model", "a is the", "and hello and", "world world", "model is tiny", "z y x"]


def engine(path, *, context_length=256, **spec) -> LlamaCppBackend:
    backend = LlamaCppBackend({"name": "t", "path": str(path), "context_length": context_length, "threads": 2, **spec})
    backend.load()
    return backend


def prompt_of(backend: LlamaCppBackend, tokens: int) -> str:
    """A prompt of about ``tokens`` tokens (the tiny vocabulary spells
    most words letter by letter)."""
    text = "tiny"
    while backend.count_tokens(text + " hello") < tokens:
        text += " hello"
    return text


def smollm2_path() -> str:
    # The tests run the installed package from any folder, so they resolve
    # the catalog themselves rather than import bench/.
    return resolve("ai/smollm2", load_settings()).path


def greedy(max_tokens: int, **kw) -> Sampling:
    return Sampling(temperature=0, max_tokens=max_tokens, **kw)


def run_all(backend: LlamaCppBackend, requests: dict[int, tuple[str, Sampling]]) -> tuple[dict[int, str], dict[int, Usage]]:
    """Start every request, step until all end; the text and usage of each."""
    texts, usages = {}, {}
    for rid, (prompt, sampling) in requests.items():
        usages[rid] = Usage()
        texts[rid] = ""
        backend.start(rid, prompt, sampling, usages[rid])
    ended = set()
    while backend.active():
        for rid, text, finished in backend.step():
            assert rid not in ended, "a sequence produced text after it ended"
            texts[rid] += text
            if finished:
                ended.add(rid)
    assert ended == set(requests)
    return texts, usages


@pytest.fixture
def tiny(tiny_files):
    backend = engine(tiny_files["llama"], parallel=4)
    yield backend
    backend.close()


def test_batched_sequences_never_cross_text(tiny):
    """Greedy decoding of each prompt alone equals the same prompt decoded
    beside six others (four at a time, the rest joining as slots free)."""
    alone = {}
    for i, prompt in enumerate(PROMPTS):
        usage = Usage()
        alone[i] = ("".join(tiny.stream(prompt, greedy(12 + i), usage)), usage.completion_tokens)
    assert len({text for text, _ in alone.values()}) == len(PROMPTS), "the prompts should give distinct answers"
    texts, usages = run_all(tiny, {i: (p, greedy(12 + i)) for i, p in enumerate(PROMPTS)})
    assert {i: (texts[i], usages[i].completion_tokens) for i in texts} == alone
    assert tiny.active() == 0


def test_cancelled_sequences_free_their_cells(tiny_files):
    backend = engine(tiny_files["llama"], context_length=64, parallel=2, chunk=16)
    try:
        memory = L.llama_get_memory(backend.ctx)
        long = prompt_of(backend, 50)
        for rid in (1, 2):
            backend.start(rid, long, greedy(40), Usage())
        for _ in range(3):
            backend.step()
        assert all(L.llama_memory_seq_pos_max(memory, s) >= 0 for s in (0, 1))
        backend.cancel(1)
        backend.cancel(2)
        assert backend.active() == 0
        assert all(L.llama_memory_seq_pos_max(memory, s) == -1 for s in (0, 1)), "a cancelled sequence kept its cells"
        # Fill the whole cache: both sequences run to the last position of
        # their context, which needs every cell back.
        texts, usages = run_all(backend, {3: (long, Sampling(temperature=0)), 4: (prompt_of(backend, 30), Sampling(temperature=0))})
        for usage in usages.values():
            assert usage.finish_reason in ("length", "stop")
            if usage.finish_reason == "length":
                assert usage.prompt_tokens + usage.completion_tokens == 64
        backend.cancel(99)  # an unknown id is ignored
    finally:
        backend.close()


def test_cancel_while_waiting_and_while_prefilling(tiny):
    for rid in range(6):
        tiny.start(rid, prompt_of(tiny, 100), greedy(5), Usage())
    tiny.cancel(5)  # still waiting for a slot
    tiny.step()
    tiny.cancel(0)  # in prefill
    ended = set()
    while tiny.active():
        ended |= {rid for rid, _, finished in tiny.step() if finished}
    assert ended == {1, 2, 3, 4}


def test_chunked_prefill_lets_a_short_request_through(tiny_files):
    """A short request that arrives while a long prompt is in prefill gets
    its tokens before the long prompt's first token."""
    backend = engine(tiny_files["llama"], parallel=2, chunk=16)
    try:
        long_usage, short_usage = Usage(), Usage()
        backend.start(1, prompt_of(backend, 200), greedy(4), long_usage)
        backend.step()
        backend.start(2, "hello", greedy(4), short_usage)
        first = {}
        step = 0
        while backend.active():
            step += 1
            for rid, text, _ in backend.step():
                first.setdefault(rid, step)
        assert long_usage.prompt_tokens > 4 * 16
        assert first[2] < first[1]
        assert first[2] <= 2, "the short prompt waited for more than one chunk"
    finally:
        backend.close()


def test_generated_text_is_the_same_through_stream_and_steps(tiny):
    usage = Usage()
    pieces = tiny.stream("hello", greedy(6), usage)
    next(pieces)
    pieces.close()  # closing the generator cancels the sequence
    assert tiny.active() == 0 and usage.finish_reason == "cancelled"


def test_threads_change_between_steps(tiny):
    """The CPU budget may move threads between workers while they run."""
    before = "".join(tiny.stream("hello world", greedy(10), Usage()))
    tiny.set_threads(1)
    assert "".join(tiny.stream("hello world", greedy(10), Usage())) == before


def test_prompt_too_long_and_bad_grammar_are_one_line_errors(tiny_files):
    backend = engine(tiny_files["llama"], context_length=32, parallel=1)
    try:
        with pytest.raises(ValueError, match="shorten it"):
            backend.start(1, prompt_of(backend, 40), greedy(4), Usage())
        with pytest.raises(ValueError, match="grammar"):
            backend.start(2, "hello", Sampling(grammar="root ::= (", max_tokens=3), Usage())
        with pytest.raises(ValueError, match="JSON schema"):
            backend.start(3, "hello", Sampling(json_schema="{not json", max_tokens=3), Usage())
        assert backend.active() == 0
    finally:
        backend.close()


def test_grammar_constrains_a_random_model(tiny):
    texts, _ = run_all(
        tiny,
        {i: (p, Sampling(temperature=1.0, seed=i, max_tokens=20, grammar='root ::= "yes" | "no" | "maybe"')) for i, p in enumerate(PROMPTS)},
    )
    assert set(texts.values()) <= {"yes", "no", "maybe"}


def test_seeded_prefix_reuse_matches_a_fresh_engine_tiny(tiny_files):
    """A warm engine (reusing whole aligned prompt chunks) and a fresh one
    give the same seeded answers at every turn of a chat."""
    warm = engine(tiny_files["llama"], parallel=2, chunk=16)
    messages = []
    try:
        for turn in ("hello world", "the tiny model", "and hello"):
            messages.append({"role": "user", "content": turn})
            prompt, stop = warm.chat_prompt(messages)
            sampling = Sampling(temperature=1.0, seed=11, max_tokens=16, stop=stop)
            reused_before = warm.engine.reused_tokens
            answer = "".join(warm.stream(prompt, sampling, Usage()))
            fresh = engine(tiny_files["llama"], parallel=2, chunk=16)
            try:
                assert "".join(fresh.stream(prompt, sampling, Usage())) == answer
            finally:
                fresh.close()
            reused = warm.engine.reused_tokens - reused_before
            if len(messages) > 1:
                assert reused > 0 and reused % 16 == 0, "only whole aligned chunks are reused for a seed"
            messages.append({"role": "assistant", "content": answer})
    finally:
        warm.close()


def test_embeddings_have_the_model_dimension(tiny):
    vectors, tokens = tiny.embed(["hello world", "the tiny model"])
    assert len(vectors) == 2 and all(len(v) == 64 for v in vectors)
    assert tokens >= 4
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    with pytest.raises(ValueError, match="empty"):
        tiny.embed([""])


def test_sampling_defaults_come_from_the_model_file():
    defaults = model_sampling_defaults({"general.sampling.temp": "0.3", "general.sampling.top_k": "20", "general.sampling.top_p": "x"})
    assert defaults["temperature"] == 0.3 and defaults["top_k"] == 20
    assert defaults["top_p"] == SAMPLING_DEFAULTS["top_p"]  # malformed: the engine's
    assert defaults["repeat_penalty"] == 1.1 and defaults["repeat_last_n"] == 64
    chosen = resolve_sampling(Sampling(temperature=0.9, top_k=0), defaults)
    assert chosen["temperature"] == 0.9 and chosen["top_k"] == 0 and chosen["min_p"] == 0.05


# -- SmolLM2 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    backend = engine(smollm2_path(), context_length=2048, parallel=4)
    yield backend
    backend.close()


@pytest.mark.e2e
def test_seeded_three_turn_chat_is_the_same_warm_and_fresh():
    # A worker of its own: the guarantee is for a cache that holds only this
    # conversation (other sequences' cells change how attention splits its
    # keys; see "Seeds" in the README).
    warm = engine(smollm2_path(), context_length=2048, parallel=4)
    messages = [{"role": "system", "content": "You are a helpful assistant who knows the sea, ships and lighthouses well. " * 3}]
    try:
        for turn in ("Tell me about lighthouses.", "Why are they painted in stripes?", "Write a short poem about one."):
            messages.append({"role": "user", "content": turn})
            prompt, stop = warm.chat_prompt(messages)
            sampling = Sampling(temperature=0.8, seed=42, max_tokens=64, stop=stop)
            warm_text = "".join(warm.stream(prompt, sampling, Usage()))
            fresh = engine(smollm2_path(), context_length=2048, parallel=4)
            try:
                fresh_text = "".join(fresh.stream(prompt, sampling, Usage()))
            finally:
                fresh.close()
            assert warm_text == fresh_text
            messages.append({"role": "assistant", "content": warm_text})
        assert warm.engine.reused_tokens > 0
    finally:
        warm.close()


@pytest.mark.e2e
def test_smollm2_answers_differ_per_prompt_in_one_batch(smol):
    questions = {0: "What is 2+2? Answer with a number.", 1: "What color is the sky on a clear day? One word.",
                 2: "What is the opposite of hot? One word."}
    requests = {}
    for rid, q in questions.items():
        prompt, stop = smol.chat_prompt([{"role": "user", "content": q}])
        requests[rid] = (prompt, greedy(24, stop=stop))
    # Answers known by construction: llama.cpp's CPU attention is not
    # batch-invariant once the cache passes 512 cells (one query row takes
    # a split-keys path), so greedy text alone and in a batch may part on
    # a near-tie; the tiny-model test above checks exact equality.
    together, _ = run_all(smol, requests)
    assert "4" in together[0] and "blue" in together[1].lower() and "cold" in together[2].lower()


@pytest.mark.e2e
def test_json_schema_output_parses(smol):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}
    prompt, stop = smol.chat_prompt([{"role": "user", "content": "Describe a person as JSON with a name and an age."}])
    text = "".join(smol.stream(prompt, greedy(80, stop=stop, json_schema=json.dumps(schema)), Usage()))
    value = json.loads(text)
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


@pytest.mark.e2e
def test_similar_texts_embed_closer(smol):
    (cat, kitten, market), _ = smol.embed(["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock prices fell sharply today."])

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b))

    assert len(cat) == 576
    assert cos(cat, kitten) > cos(cat, market)


def test_choices_of_one_prompt_share_its_evaluation(tiny_files):
    """n choices of one prompt (and prompts that start alike): the prompt's
    cells are evaluated once and shared, and seeded answers are bit for bit
    those each gets alone on a fresh engine."""
    shared = engine(tiny_files["llama"], parallel=4, chunk=16)
    try:
        prompt = prompt_of(shared, 40)
        requests = {i: (prompt, Sampling(temperature=1.0, seed=i, max_tokens=8)) for i in range(1, 4)}
        texts, usages = run_all(shared, requests)
        n = usages[1].prompt_tokens
        # the two whole aligned chunks (32 tokens) evaluated once, borrowed by the other two
        assert shared.engine.reused_tokens >= 2 * 32
        loose = {i: (prompt, Sampling(temperature=1.0, max_tokens=4)) for i in range(10, 14)}
        before = shared.engine.reused_tokens
        run_all(shared, loose)
        assert shared.engine.reused_tokens - before >= 3 * (n - 1)  # unseeded: all but each last token
    finally:
        shared.close()
    for i, (p, sampling) in requests.items():
        alone = engine(tiny_files["llama"], parallel=4, chunk=16)
        try:
            assert "".join(alone.stream(p, sampling, Usage())) == texts[i]
        finally:
            alone.close()
