"""Continuous batching over one llama.cpp context.

Up to ``parallel`` sequences decode together: each step builds one
``llama_decode`` batch holding the next token of every decoding sequence
and at most one prompt chunk of prefill, then samples every sequence that
got logits with its own sampler chain. A sequence joins at the next step
and leaves the moment it ends or is cancelled.

KV bookkeeping. The context has one KV cache for all sequences (llama.cpp's
unified cache, ``n_seq_max = parallel``, ``parallel x context`` cells).
Each *slot* (a llama.cpp sequence id) keeps the tokens it evaluated, so the
next request that shares a prefix with a slot (the next turn of a chat)
evaluates only the rest. No slot ever holds more than ``n_ctx_seq`` cells,
so the cache can never run out whatever the mix of sequences.

Seeds. "Same seed, same conversation, same answer" needs a reused prefix
to be bit for bit what a fresh evaluation gives, and llama.cpp's CPU
kernels are not batch-invariant: flash attention takes a tiled path for
many query rows and splits the keys across threads for one, so a token
evaluated alone, in a chunk of another size or at another offset gets
slightly different K and V (measured: logits differ by up to 0.48 after
300 tokens). So prompts are evaluated in chunks that end on multiples of
``chunk`` (absolute positions), and a seeded request reuses only whole
aligned prompt chunks evaluated that way before, never tokens that were
generated one at a time; a fresh engine then does the same arithmetic.
"""

from __future__ import annotations

import ctypes

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import llama_cpp as L
import numpy as np  # llama_cpp's own dependency, loaded with it

from corral.workers.backend import Usage
from corral.workers.text_stream import Generation, token_limit


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose K, V are in this slot's cells
    exact: int = 0  # leading cached tokens evaluated as whole aligned prompt chunks
    last_used: int = 0
    busy: bool = False


@dataclass
class Sequence:
    rid: int
    tokens: list[int]  # the prompt
    sampler: Any  # llama_sampler_p, owned
    generation: Generation
    seeded: bool
    slot: Slot | None = None
    next_token: int = -1  # sampled, to be evaluated at the next step (-1: in prefill)
    fed: int = 0  # the step that last evaluated a chunk of its prompt
    top_logprobs: int | None = None  # log probabilities wanted, with this many alternatives


class Engine:
    """The batch loop. Not thread-safe: ``admit``, ``step`` and ``cancel``
    must come from one thread (the worker's main thread)."""

    def __init__(self, ctx: Any, vocab: Any, *, parallel: int, n_ctx_seq: int, chunk: int,
                 token_bytes: Callable[[int], bytes]):
        self.ctx, self.vocab = ctx, vocab
        self.memory = L.llama_get_memory(ctx)
        self.parallel, self.n_ctx_seq, self.chunk = parallel, n_ctx_seq, chunk
        self.token_bytes = token_bytes
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self._row_type = None  # a logits row as a ctypes array type, made once
        self.slots = [Slot(i) for i in range(parallel)]
        self.waiting: deque[Sequence] = deque()  # admitted, no free slot yet
        self.running: list[Sequence] = []  # in admission order
        self.by_rid: dict[int, Sequence] = {}
        self.clock = 0  # slot use order
        self.steps = 0
        self.reused_tokens = 0  # prompt tokens taken from the cache, all told
        capacity = parallel + chunk
        self.batch = L.llama_batch_init(capacity, 0, 1)
        b = self.batch
        for i in range(capacity):
            b.n_seq_id[i] = 1
        # Filling the batch is the only Python work per token: keep the
        # arrays and the per-token seq_id pointers at hand.
        self._tok, self._pos, self._logits = b.token, b.pos, b.logits
        self._seq = [b.seq_id[i] for i in range(capacity)]

    # -- admission -----------------------------------------------------------

    def admit(self, rid: int, tokens: list[int], sampler: Any, *, stop: list[str], max_tokens: int | None,
              seeded: bool, usage: Usage, top_logprobs: int | None = None) -> None:
        """Take a sequence; raises ValueError (and frees ``sampler``) if its
        prompt cannot fit in one sequence's context."""
        if rid in self.by_rid:
            L.llama_sampler_free(sampler)
            raise ValueError(f"request id {rid} is already running")
        try:
            limit = token_limit(max_tokens, len(tokens), self.n_ctx_seq)
        except ValueError:
            L.llama_sampler_free(sampler)
            raise
        usage.prompt_tokens = len(tokens)
        generation = Generation(is_end=self._is_end, token_bytes=self.token_bytes, stop=stop, limit=limit, usage=usage)
        seq = Sequence(rid, tokens, sampler, generation, seeded, top_logprobs=top_logprobs)
        self.by_rid[rid] = seq
        self.waiting.append(seq)

    def _is_end(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def _place_waiting(self) -> None:
        while self.waiting and len(self.running) < self.parallel:
            seq = self.waiting.popleft()
            slot = max((s for s in self.slots if not s.busy), key=lambda s: (_common_prefix(s.cached, seq.tokens), -s.last_used))
            slot.busy = True
            seq.slot = slot
            self._reuse(slot, seq.tokens, seq.seeded)
            self.running.append(seq)

    def _reuse(self, slot: Slot, tokens: list[int], seeded: bool) -> None:
        """Keep the slot's cells for the prefix it shares with ``tokens``;
        the last prompt token is always evaluated again for its logits."""
        keep = min(_common_prefix(slot.cached, tokens), len(tokens) - 1)
        if seeded:
            keep = min(keep, slot.exact)
        if keep < len(slot.cached):
            if not L.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1):
                L.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                keep = 0
            del slot.cached[keep:]
        slot.exact = min(slot.exact, keep)
        self.reused_tokens += keep

    def _borrow(self, seq: Sequence) -> None:
        """Share the cells another slot holds of this prompt beyond what its
        own slot has: the n choices of one request (and any prompts that
        start alike) evaluate their common prompt once. llama.cpp's unified
        cache shares the cells, nothing is copied. A seeded sequence
        borrows whole aligned chunks only (see the module's "Seeds"); the
        last prompt token is always its own, for its logits."""
        slot = seq.slot
        have = len(slot.cached)
        limit = len(seq.tokens) - 1
        best, best_n = None, have
        for other in self.slots:
            if other is slot or len(other.cached) <= best_n:
                continue
            n = min(_common_prefix(other.cached, seq.tokens), limit)
            if seq.seeded:
                n = min(n, other.exact) // self.chunk * self.chunk
            if n > best_n:
                best, best_n = other, n
        if best is None:
            return
        L.llama_memory_seq_cp(self.memory, best.seq_id, slot.seq_id, have, best_n)
        if slot.exact == have and best_n <= best.exact and best_n % self.chunk == 0:
            slot.exact = best_n  # whole aligned chunks, as if evaluated here
        slot.cached.extend(seq.tokens[have:best_n])
        self.reused_tokens += best_n - have

    # -- the step --------------------------------------------------------------

    def active(self) -> int:
        return len(self.by_rid)

    def step(self) -> list[tuple[int, str, bool]]:
        """Advance every running sequence by one token (or one prompt chunk);
        return (rid, text, finished) for each that produced text or ended."""
        self._place_waiting()
        if not self.running:
            return []
        for seq in self.running:  # before this step adds tokens: only cells already evaluated are shared
            if seq.next_token < 0:
                self._borrow(seq)
        tok, pos, logits, seqs = self._tok, self._pos, self._logits, self._seq
        n = 0
        outputs: list[tuple[Sequence, int]] = []
        prefilling = []
        for seq in self.running:
            if seq.next_token < 0:
                prefilling.append(seq)
                continue
            slot = seq.slot
            tok[n] = seq.next_token
            pos[n] = len(slot.cached)
            seqs[n][0] = slot.seq_id
            logits[n] = 1
            slot.cached.append(seq.next_token)
            outputs.append((seq, n))
            n += 1
        self.steps += 1
        budget = self.chunk
        scheduled: list[tuple[list[int], int, int]] = []  # prompt chunks in this step: (prompt, start, end)
        # Prompts take turns at the chunk budget, least recently fed first,
        # so a stream of short prompts never starves a long one.
        for seq in sorted(prefilling, key=lambda s: s.fed):
            slot = seq.slot
            start = len(slot.cached)
            # Chunks end on multiples of `chunk` (absolute positions), so a
            # later request can reuse them as whole chunks.
            end = min(len(seq.tokens), (start // self.chunk + 1) * self.chunk)
            if end - start > budget:
                continue  # does not fit whole in what is left of this step
            shareable = not seq.seeded or end % self.chunk == 0  # what a seeded twin may borrow
            if end - start > 1 and shareable and any(s == start and _common_prefix(p, seq.tokens) >= end for p, s, _ in scheduled):
                continue  # a twin evaluates these very tokens now: borrow its cells next step
            scheduled.append((seq.tokens, start, end))
            sid = slot.seq_id
            for p in range(start, end):
                tok[n] = seq.tokens[p]
                pos[n] = p
                seqs[n][0] = sid
                logits[n] = 0
                n += 1
            budget -= end - start
            seq.fed = self.steps
            slot.cached.extend(seq.tokens[start:end])
            if slot.exact == start and end % self.chunk == 0:
                slot.exact = end
            if end == len(seq.tokens):
                logits[n - 1] = 1
                outputs.append((seq, n - 1))
        self.batch.n_tokens = n
        rc = L.llama_decode(self.ctx, self.batch)
        if rc != 0:
            # Every slot is capped at n_ctx_seq cells, so "no room" cannot
            # happen; anything else is an engine failure for all of them.
            raise RuntimeError(f"llama_decode failed with code {rc}")
        events = []
        for seq, index in outputs:
            token = L.llama_sampler_sample(seq.sampler, self.ctx, index)
            if seq.top_logprobs is not None and not self._is_end(token):
                seq.generation.usage.logprobs.append(self._logprobs(index, token, seq.top_logprobs))
            text, done = seq.generation.feed(token)
            seq.next_token = token
            if done:
                self._leave(seq, keep_cache=True)
            if text or done:
                events.append((seq.rid, text, done))
        return events

    def _logprobs(self, index: int, token: int, top: int) -> tuple:
        """The sampled token's log probability under the model (the raw
        logits' log-softmax, before any sampler), and the ``top`` likeliest."""
        if self._row_type is None:  # np.ctypeslib.as_array makes a ctypes type per call: 10% of decode
            self._row_type = ctypes.POINTER(ctypes.c_float * self.n_vocab)
            self._scratch = np.empty(self.n_vocab, dtype=np.float32)
        row = ctypes.cast(L.llama_get_logits_ith(self.ctx, index), self._row_type).contents
        logits = np.frombuffer(row, dtype=np.float32)
        # log-sum-exp in one scratch row: no vocabulary-sized allocation per token
        top_logit = logits.max()
        scratch = self._scratch
        np.subtract(logits, top_logit, out=scratch)
        np.exp(scratch, out=scratch)
        log_total = float(np.log(scratch.sum(dtype=np.float64))) + float(top_logit)
        best: list = []
        if top:
            ids = likeliest(logits, top)
            best = [(self.token_bytes(int(i)), float(logits[i]) - log_total) for i in ids]
        return self.token_bytes(token), float(logits[token]) - log_total, best

    # -- leaving ---------------------------------------------------------------

    def cancel(self, rid: int) -> None:
        """Stop a sequence now and free its KV cells; unknown ids are ignored."""
        seq = self.by_rid.get(rid)
        if seq is None:
            return
        seq.generation.usage.finish_reason = "cancelled"
        if seq.slot is None:
            self.waiting.remove(seq)
        self._leave(seq, keep_cache=False)

    def _leave(self, seq: Sequence, *, keep_cache: bool) -> None:
        del self.by_rid[seq.rid]
        L.llama_sampler_free(seq.sampler)
        seq.sampler = None
        slot = seq.slot
        if slot is None:
            return
        self.running.remove(seq)
        slot.busy = False
        self.clock += 1
        slot.last_used = self.clock
        if not keep_cache:
            L.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.cached.clear()
            slot.exact = 0

    def forget(self) -> None:
        """Drop every idle slot's cached prefix."""
        for slot in self.slots:
            if not slot.busy:
                L.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                slot.cached.clear()
                slot.exact = 0

    def close(self) -> None:
        for rid in list(self.by_rid):
            self.cancel(rid)
        if self.batch is not None:
            L.llama_batch_free(self.batch)
            self.batch = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n



def likeliest(logits: np.ndarray, top: int) -> np.ndarray:
    """The ids of the ``top`` largest logits, largest first. A partition of
    the whole vocabulary costs 0.4 ms a token (49k entries), 4% of decode;
    the ``top``-th largest of every 64th logit is a floor that at least
    ``top`` logits reach, so only those few hundred are partitioned
    (0.03 ms). Exact: the whole row is the fallback when the floor leaves
    fewer than ``top``."""
    sample = logits[::64]
    k = min(top, len(sample))
    floor = np.partition(sample, -k)[-k]
    candidates = np.flatnonzero(logits >= floor)
    if len(candidates) < top:
        candidates = np.arange(len(logits))
    ids = candidates[np.argpartition(logits[candidates], -top)[-top:]] if len(candidates) > top else candidates
    return ids[np.argsort(-logits[ids], kind="stable")]
