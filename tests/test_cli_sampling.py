"""Sampling flags reach the sampler: on a tiny random model (fast) where a
flag's effect is plain to see, and on SmolLM2 (e2e) where it takes
language: stop strings, and greedy answers that end on their own."""

from __future__ import annotations

import pytest

from conftest import SMOLLM2


def answers(corral, model: str, *flags: str) -> list[str]:
    """The answers to one prompt under seeds 1 and 2, at temperature 1."""
    out = []
    for seed in ("1", "2"):
        result = corral("run", model, "hello", "--max-tokens", "12", "--temperature", "1", "--seed", seed, *flags)
        assert result.code == 0, result
        out.append(result.out)
    return out


def test_top_k_1_and_min_p_1_make_any_seed_greedy(corral, tiny_catalog):
    model = tiny_catalog["llama"]
    free = answers(corral, model)
    assert free[0] != free[1]  # random weights: two seeds, two answers
    top_k = answers(corral, model, "--top-k", "1")
    min_p = answers(corral, model, "--min-p", "1")
    assert top_k[0] == top_k[1] == min_p[0] == min_p[1]
    greedy = corral("run", model, "hello", "--max-tokens", "12", "--temperature", "0")
    assert greedy.out == top_k[0]


@pytest.mark.e2e
def test_stop_ends_the_answer_before_the_stop_string(corral):
    prompt = "Count from 1 to 20, separated by commas."
    whole = corral("run", SMOLLM2, prompt, "--temperature", "0", "--max-tokens", "80")
    assert "7" in whole.out and "8" in whole.out, whole
    stopped = corral("run", SMOLLM2, prompt, "--temperature", "0", "--max-tokens", "80", "--stop", "7", "--stop", "never")
    assert stopped.code == 0, stopped
    assert "6" in stopped.out and "7" not in stopped.out and "8" not in stopped.out
    assert "[cut at" not in stopped.err


@pytest.mark.e2e
def test_greedy_hi_as_a_pirate_ends_on_its_own(corral):
    result = corral("run", SMOLLM2, "--system", "You are a pirate.", "--temperature", "0", "Hi", "--verbose")
    assert result.code == 0, result
    assert result.out.strip()
    # It ended with the model's end of text, not at the context limit.
    assert "[cut at" not in result.err
    assert "stopped:" not in result.err  # the stats name an ending other than "stop"
