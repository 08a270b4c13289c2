"""``python -m llama_cpp.server`` as a Python user would run it, except that
llama.cpp's extra buffer types stay off on AMX CPUs, as in corral's worker
and the in-process baselines (they segfault on this machine's first
multi-token batch: ggml-org/llama.cpp#20824). Arguments are the server's."""

from __future__ import annotations

import llama_cpp
import llama_cpp.llama

from corral.workers.llama_cpp_backend import extra_buffers_allowed

_default_params = llama_cpp.llama_model_default_params


def _params():
    params = _default_params()
    params.use_extra_bufts = extra_buffers_allowed()
    return params


if __name__ == "__main__":
    llama_cpp.llama.llama_cpp.llama_model_default_params = _params
    from llama_cpp.server.__main__ import main

    main()
