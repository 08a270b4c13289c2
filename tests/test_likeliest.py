"""The worker's top-logprob pick (workers/llama_batch.likeliest): exactly
the largest logits, largest first, for any row and any count, ties and
vocabularies smaller than its sample stride included."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from corral.workers.llama_batch import likeliest

rows = arrays(np.float32, st.integers(1, 5000), elements=st.floats(-30, 30, width=32))


@given(rows, st.integers(1, 20))
def test_the_largest_logits_largest_first(logits, top):
    top = min(top, len(logits))
    ids = likeliest(logits, top)
    assert len(ids) == top == len(set(ids.tolist()))
    assert np.array_equal(logits[ids], np.sort(logits)[::-1][:top])


def test_a_real_sized_row_and_a_row_of_ties():
    logits = np.random.default_rng(0).standard_normal(49152).astype(np.float32) * 5
    assert np.array_equal(likeliest(logits, 5), np.argsort(-logits, kind="stable")[:5])
    assert len(likeliest(np.zeros(49152, dtype=np.float32), 20)) == 20
