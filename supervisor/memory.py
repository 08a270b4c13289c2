"""How much memory a model's worker will take, from its file header alone.

worker memory = weights + KV cache + compute buffers + runtime

- weights: the tensor data (mapped from the file, all of it touched once the
  first prompt is evaluated);
- KV cache: for every layer and every position of the context, a K and a V
  vector per KV head, in f16 (llama.cpp's default) or f32 (ctransformers);
- llama.cpp: one KV cache for ``parallel`` sequences of the context each
  (the worker decodes them together); compute buffers for one micro-batch
  (a prompt chunk plus one token per sequence) with flash attention, which
  the logits over the vocabulary dominate;
- ctransformers: the attention scores of one micro-batch against the whole
  context (n_ubatch x n_ctx x n_head floats) plus activations and logits;
- runtime: the Python interpreter, the engine library and corral's worker,
  measured with `python -m bench.memory` on this machine.

`bench/memory.py` checks the result against measured peak RSS; the README
keeps the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from corral.configs.catalog import BATCHING_BACKENDS, CTRANSFORMERS, ECHO, ModelSpec
from corral.supervisor.errors import ModelLoadFailed
from corral.supervisor.model_files import read_header

MiB = 1024 * 1024
# ctransformers' micro-batch.
N_UBATCH = 512
# Resident size of a worker with no model: interpreter, engine, zmq, corral.
RUNTIME_BYTES = {"llama.cpp": 58 * MiB, CTRANSFORMERS: 45 * MiB, ECHO: 30 * MiB}


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    runtime_bytes: int
    context_length: int
    parallel: int = 1  # sequences decoded together, each with the context

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.runtime_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}


def worker_sequences(spec: ModelSpec, setting: int | None = None) -> int:
    """Sequences a worker of ``spec`` decodes together: N for anyone (its
    entry's ``parallel``, else the ``parallel`` setting, else the backend's
    measured default) plus the seat kept for another client
    (:func:`corral.supervisor.policy.sequences_per_worker`)."""
    from corral.supervisor.policy import sequences_per_worker
    from corral.workers.llama_cpp_backend import DEFAULT_PARALLEL

    return sequences_per_worker(spec.backend in BATCHING_BACKENDS, spec.parallel or setting, DEFAULT_PARALLEL)


def estimate_memory(spec: ModelSpec, context_length: int | None = None, parallel: int | None = None) -> Estimate:
    """The estimate for ``spec`` loaded with its (or the given) context length
    and number of sequences decoded together (default: :func:`worker_sequences`
    without the setting)."""
    if spec.backend == ECHO:
        return Estimate(0, 0, 0, RUNTIME_BYTES[ECHO], spec.context_length)
    h = read_header(spec.path, spec.model_type)
    if h.truncated:
        raise ModelLoadFailed(
            f"{spec.path} is truncated: {h.file_bytes} of {h.expected_bytes} bytes; re-download or re-copy it"
        )
    n_ctx = context_length or spec.context_length
    kv_per_position = h.n_layer * h.n_head_kv * (h.head_dim_k + h.head_dim_v)
    if spec.backend == CTRANSFORMERS:
        n_seq = 1  # no batched decode: one request at a time
        if h.context_length_trained:
            # ctransformers' GGML models size their KV cache from the file.
            n_ctx = h.context_length_trained
        kv = n_ctx * kv_per_position * 4
        batch = min(N_UBATCH, n_ctx)
        compute = 4 * batch * (n_ctx * h.n_head + h.n_vocab // 4 + 4 * h.n_embd)
    else:
        from corral.workers.llama_cpp_backend import DEFAULT_CHUNK

        n_seq = parallel or worker_sequences(spec)
        kv = n_seq * n_ctx * kv_per_position * 2  # f16
        # Measured with flash attention: ~ one float per vocabulary entry and
        # 8 per embedding dimension for each micro-batch row.
        compute = 4 * (DEFAULT_CHUNK + n_seq) * (h.n_vocab + 8 * h.n_embd)
    return Estimate(
        weights_bytes=h.weights_bytes,
        kv_cache_bytes=kv,
        compute_bytes=compute,
        runtime_bytes=RUNTIME_BYTES.get(spec.backend, 50 * MiB),
        context_length=n_ctx,
        parallel=n_seq,
    )
