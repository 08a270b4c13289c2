"""The header readers on hostile files: real headers mutated at random
(hypothesis), and headers that lie about their counts. Whatever the bytes,
the only exception is the project's own ``ModelLoadFailed``, and nothing is
allocated in proportion to a claimed count."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from corral.configs.catalog import resolve
from corral.configs.settings import load_settings
from corral.supervisor.errors import ModelLoadFailed
from corral.supervisor.model_files import HeaderIncomplete, read_header, read_header_bytes
from hostile_files import STRING, U32, U64, gguf_header, llama_kv, write

FUZZ_EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "200"))


@pytest.fixture(scope="module")
def smollm2_head() -> tuple[bytes, int]:
    path = resolve("ai/smollm2", load_settings({"CORRAL_HOME": "/tmp/corral-unused"})).path
    with open(path, "rb") as f:
        return f.read(64 * 1024), os.path.getsize(path)


def test_a_real_header_prefix_asks_for_more(smollm2_head):
    data, size = smollm2_head
    with pytest.raises(HeaderIncomplete):
        read_header_bytes(data, size)


def test_tiny_models_read_whole_and_untruncated(tiny_files):
    header = read_header(str(tiny_files["llama"]))
    assert (header.architecture, header.n_layer, header.truncated) == ("llama", 2, False)
    assert header.expected_bytes == header.file_bytes
    assert read_header(str(tiny_files["gpt2"]), "gpt2").n_layer == 2


def test_a_truncated_file_says_how_much_is_missing(tiny_files, tmp_path):
    data = tiny_files["llama"].read_bytes()
    cut = write(tmp_path / "cut.gguf", data[: len(data) // 2], pad_to=0)
    header = read_header(str(cut))
    assert header.truncated and header.file_bytes == len(data) // 2 and header.expected_bytes == len(data)


@pytest.mark.parametrize(
    "data, match",
    [
        (gguf_header(llama_kv(general__alignment=(U32, 0))), "alignment"),
        (gguf_header(llama_kv(general__alignment=(U32, 3))), "alignment"),
        (gguf_header(llama_kv(), n_tensors=2**60), "runs past"),
        (gguf_header(llama_kv(), n_kv=2**60), "runs past"),
        (gguf_header([("general.architecture", STRING, "x" * 5000)]), "runs past"),
        (gguf_header(llama_kv(), tensors=[("t", (1, 2, 3, 4, 5), 0, 0)]), "dimensions"),
        (gguf_header([("k", U64, 1)]).replace(b"\x01\x00\x00\x00\x00\x00\x00\x00k", b"\x00\x00\x00\x00\x00\x01\x00\x00k"), "runs past"),
    ],
    ids=["alignment-0", "alignment-3", "2^60-tensors", "2^60-keys", "value-past-eof", "5-dims", "2^40-key"],
)
def test_lying_headers_fail_fast_with_the_projects_error(tmp_path, data, match):
    path = write(tmp_path / "lie.gguf", data[:4096], pad_to=4096)
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadFailed, match=match):
            read_header(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_string_claiming_2_to_the_40_bytes(tmp_path):
    data = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    data += (2**40).to_bytes(8, "little") + b"general.architecture"
    with pytest.raises(ModelLoadFailed):
        read_header(str(write(tmp_path / "s.gguf", data)))


def test_missing_and_vanished_files(tmp_path):
    with pytest.raises(ModelLoadFailed, match="cannot read"):
        read_header(str(tmp_path / "never-there.gguf"))


def test_unreadable_file_is_the_projects_error(tiny_files, tmp_path):
    # As root every file is readable, so read it as another user: the
    # folder (0700, root's) then refuses even the stat.
    code = (
        "import os, mmap\n"
        "from corral.supervisor.model_files import read_header\n"
        "from corral.supervisor.errors import ModelLoadFailed\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"try: read_header({str(tiny_files['llama'])!r})\n"
        "except ModelLoadFailed as exc: print('refused:', exc.message)\n"
    )
    if os.geteuid() != 0:
        os.chmod(tiny_files["llama"].parent, 0o000)
        code = code.replace("os.setgid(65534); os.setuid(65534)", "pass")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(tiny_files["llama"].parent, 0o700)
    assert out.stdout.startswith("refused: cannot read"), out


def _check_only_model_load_failed(data: bytes, size: int) -> None:
    try:
        read_header_bytes(data, size)
    except ModelLoadFailed:
        pass


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_smollm2_header(smollm2_head, data):
    head, size = smollm2_head
    buf = bytearray(head)
    for _ in range(data.draw(st.integers(1, 8))):
        # mostly in the first few KB, where the counts and lengths are
        at = data.draw(st.integers(0, 4096) | st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    _check_only_model_load_failed(bytes(buf), size)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tiny_models(tiny_files, tmp_path_factory, data):
    which = data.draw(st.sampled_from(["llama", "gpt2"]))
    buf = bytearray(tiny_files[which].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, 2048) | st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(buf)))
    blob = bytes(buf[:cut] if cut is not None else buf)
    if which == "llama":
        _check_only_model_load_failed(blob, len(blob))
    else:
        path = tmp_path_factory.mktemp("fuzz") / "m.bin"
        path.write_bytes(blob)
        try:
            read_header(str(path), "gpt2")
        except ModelLoadFailed:
            pass
