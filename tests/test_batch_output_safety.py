"""`corral batch -o FILE` never loses what FILE holds: a file that is not a
batch output is refused and left byte for byte as it was, -o cannot be the
input, an output that cannot be written is found before any prompt is
answered, and a disk that fills mid-batch stops it with whole lines only,
resumable once there is room. Invalid UTF-8 in the input is a bad line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error, wait_for
from small_disk import fill, small_disk

pytestmark = pytest.mark.integration


def prompts(path: Path, n: int) -> list[str]:
    ids = [f"p{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "prompt": "Hi", "max_tokens": 4}) + "\n" for i in ids))
    return ids


def ids_in(path: Path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("content", [
    b"my notes\nabout the run\n",
    b'{"id": "p0", "text": "x"}\nA note between results\n{"id": "p1", "text": "y"}\n',
    b'{"id": "p0", "text": "x"}\n{"not": "a result"}\n',
    b'{"id": "p0", "text": "x"}\nnot a result and no newline',
])
def test_an_output_that_is_not_results_is_refused_and_untouched(corral, tiny_catalog, tmp_path, content):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompts(source, 2)
    out.write_bytes(content)
    result = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out))
    assert_one_line_error(result, 2)
    assert "not a result line" in result.err and "another -o file" in result.err
    assert out.read_bytes() == content


def test_only_a_torn_last_line_is_cut(corral, tiny_catalog, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = prompts(source, 3)
    out.write_text(json.dumps({"id": "p0", "text": "x"}) + '\n\n{"id": "p1", "te')
    result = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out))
    assert result.code == 0, result
    assert sorted(ids_in(out)) == sorted(ids)


def test_output_equal_to_input_is_refused(corral, tiny_catalog, tmp_path):
    source = tmp_path / "in.jsonl"
    prompts(source, 2)
    before = source.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(source)
    for spelling in (str(source), str(tmp_path / "." / "in.jsonl"), str(tmp_path / "link.jsonl")):
        result = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", spelling)
        assert_one_line_error(result, 2)
        assert "is the input file" in result.err
    assert source.read_bytes() == before


def test_invalid_utf8_in_the_input_is_a_bad_line(corral, tiny_catalog, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b'{"id": 1, "prompt": "Hi"}\n{"id": 2, "prompt": "caf\xe9"}\n')
    refused = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out))
    assert refused.code == 2 and "Traceback" not in refused.err
    assert "in.jsonl:2: not UTF-8" in refused.err
    skipped = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out), "--skip-bad-lines")
    assert skipped.code == 0, skipped
    assert ids_in(out) == [1]


def test_json_nested_too_deep_in_the_input_is_a_bad_line(corral, tiny_catalog, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": 1, "prompt": "Hi"}\n{"id": 2, "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    refused = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out))
    assert refused.code == 2 and "Traceback" not in refused.err
    assert "in.jsonl:2: nested too deeply" in refused.err


def test_an_unwritable_output_is_found_before_any_prompt(corral, tiny_catalog, tmp_path):
    source = tmp_path / "in.jsonl"
    prompts(source, 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in ("/dev/null", str(fifo)):  # a FIFO: reading it to resume would block for ever
        not_a_file = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", target)
        assert_one_line_error(not_a_file, 2)
        assert "not a regular file" in not_a_file.err
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk)
        full = corral("batch", tiny_catalog["llama"], "-i", str(source), "-o", str(disk / "out.jsonl"))
        assert_one_line_error(full, 2)
        assert "is full" in full.err
    status = corral("status", "--json")
    assert json.loads(status.out)["requests_total"] == 0  # refused before any prompt was sent


def test_a_disk_that_fills_mid_batch_stops_it_with_whole_lines(corral, tiny_catalog, tmp_path):
    import subprocess

    from conftest import CORRAL

    source = tmp_path / "in.jsonl"
    ids = prompts(source, 400)
    with small_disk(tmp_path / "disk", "256k") as disk:
        out = disk / "out.jsonl"
        args = [CORRAL, "batch", tiny_catalog["llama"], "-i", str(source), "-o", str(out), "--concurrency", "1"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=120)
        filler = fill(disk)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        error_lines = [line for line in err.splitlines() if line.startswith("Error: ")]
        assert len(error_lines) == 1 and "No space left on device" in error_lines[0], err
        assert "run the same command again" in error_lines[0]
        done = ids_in(out)  # every line whole
        assert 0 < len(done) < len(ids)
        filler.unlink()
        again = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert sorted(ids_in(out)) == sorted(ids)
