"""What the worker refuses of a GBNF grammar before llama.cpp sees it
(workers/llama_sampling.check_gbnf): the two forms llama.cpp's parser takes
but cannot run, a backward range (it aborts the worker) and a repetition
with min > max (it eats the memory), and repetitions past the bound."""

from __future__ import annotations

import json

import pytest

from corral.workers.llama_sampling import check_gbnf, grammar_text

RUNS = [
    'root ::= "yes" | "no"', "root ::= [a-z]+", r"root ::= [\x00-\x7f]", 'root ::= "a"{2,5} "b"{3} "c"{2,}',
    r'root ::= "\"[z-a]{5,2}"',  # inside a literal: text, not a range
    "root ::= [^a] # [z-a] {9,1}",  # a comment
    r"root ::= [\]-a]", "root ::= [-a] [a-]",
]


@pytest.mark.parametrize("grammar", RUNS)
def test_grammars_llama_cpp_can_run_pass(grammar):
    assert check_gbnf(grammar) == grammar


@pytest.mark.parametrize("grammar, says", [
    ("root ::= [z-a]", "range z-a runs backwards"),
    (r"root ::= [\u00ff-\u0010]", "runs backwards"),
    ('root ::= "a"{5,2}', "at least 5 but at most 2"),
    ('root ::= "a"{0,100000}', "past the limit"),
])
def test_what_it_cannot_run_is_refused_by_name(grammar, says):
    with pytest.raises(ValueError, match=says):
        check_gbnf(grammar)


def test_schemas_convert_to_grammars_that_pass_and_items_of_anything_is_taken():
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 40}, "tags": {"type": "array", "items": {}},
        "id": {"type": "string", "pattern": "^[a-f0-9]{8}$"}, "n": {"type": "array", "items": {"type": "number"}, "maxItems": 5}}}
    assert "root" in grammar_text({"json_schema": json.dumps(schema)})
    with pytest.raises(ValueError) as info:
        grammar_text({"json_schema": json.dumps({"properties": {"z": {"$ref": "#/nope"}}, "x": "y" * 100_000})})
    assert len(str(info.value)) < 300 and "JSON schema" in str(info.value)
