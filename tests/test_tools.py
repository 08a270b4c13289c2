"""The generic tool-call form (gateway/tools.py): what the model is told,
the schema its answer is held to, and the answer read back, whole or
streamed piece by piece."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.gateway import tool_formats, tools
from corral.supervisor.errors import BadRequest

WEATHER = tools.Function("get_weather", "the weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
})
TIME = tools.Function("get_time", "the time now")


def test_required_schema_admits_only_calls_of_the_offered_tools():
    schema = tools.schema(tools.plan([WEATHER, TIME], "required"))
    jsonschema.validate({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}, schema)
    jsonschema.validate({"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "x"}}]}, schema)
    for wrong in ({"response": "hi"}, {"tool_calls": []}, {"tool_calls": [{"name": "get_weather", "arguments": {}}]},
                  {"tool_calls": [{"name": "rm_rf", "arguments": {}}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_named_choice_admits_that_tool_only_and_one_call_without_parallel():
    schema = tools.schema(tools.plan([WEATHER, TIME], "get_time", parallel=False))
    jsonschema.validate({"tool_calls": [{"name": "get_time", "arguments": {}}]}, schema)
    for wrong in ({"tool_calls": [{"name": "get_weather", "arguments": {"city": "x"}}]},
                  {"tool_calls": [{"name": "get_time", "arguments": {}}] * 2}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_auto_admits_text_or_calls_and_none_constrains_nothing():
    p = tools.plan([WEATHER], "auto")
    jsonschema.validate({"response": "It is sunny."}, tools.schema(p))
    jsonschema.validate({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}, tools.schema(p))
    assert tools.sampling_options(tools.plan([WEATHER], "none")) == {}
    assert tools.with_instructions([{"role": "user", "content": "hi"}], tools.plan([WEATHER], "none")) == [{"role": "user", "content": "hi"}]


def test_instructions_join_the_first_system_message():
    p = tools.plan([WEATHER], "auto")
    merged = tools.with_instructions([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], p)
    assert len(merged) == 2 and merged[0]["content"].startswith("Be brief.") and "get_weather" in merged[0]["content"]
    added = tools.with_instructions([{"role": "user", "content": "hi"}], p)
    assert [m["role"] for m in added] == ["system", "user"]


def test_answers_are_read_back_as_calls_or_text():
    p = tools.plan([WEATHER], "auto")
    content, calls = tools.parse('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}', p)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert calls[0].id.startswith("call_") and len(calls[0].id) > 10
    assert tools.parse('{"response": "Hello"}', p) == ("Hello", [])
    cut = '{"tool_calls": [{"name": "get_wea'  # max_tokens ran out mid-call
    assert tools.parse(cut, p) == (cut, [])


@pytest.mark.parametrize("bad, field", [
    ({"name": "has space"}, "tools[0].function.name"),
    ({"name": "f", "parameters": {"type": "string"}}, "tools[0].function.parameters.type"),
    ({"name": "f", "parameters": {"type": "object", "properties": {"a": 3}}}, "tools[0].function.parameters.properties"),
    ({"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["a"]}}, "tools[0].function.parameters.required"),
    ({"name": "f", "parameters": []}, "tools[0].function.parameters"),
])
def test_a_bad_tool_is_refused_naming_its_field(bad, field):
    with pytest.raises(BadRequest) as info:
        tools.function("tools[0].function", bad["name"], None, bad.get("parameters"))
    assert info.value.message.startswith(field + ":")


def test_a_choice_must_name_an_offered_tool_and_names_are_unique():
    with pytest.raises(BadRequest, match="no tool is named 'nope'; the tools are get_weather"):
        tools.plan([WEATHER], "nope")
    with pytest.raises(BadRequest, match="used twice"):
        tools.plan([WEATHER, WEATHER], "auto")


def test_history_is_told_in_the_same_form():
    said = tools.past_calls([("get_weather", '{"city": "Oslo"}', "call_1")])
    result = tools.past_result("12 C", name="get_weather", call="call_1")
    generic = tools.with_instructions([said, result], tools.NO_TOOLS)
    assert [m["role"] for m in generic] == ["assistant", "user"] and all(set(m) == {"role", "content"} for m in generic)
    assert json.loads(generic[0]["content"]) == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    assert json.loads(generic[1]["content"]) == {"tool_result": {"content": "12 C", "name": "get_weather", "tool_call_id": "call_1"}}


def test_a_tool_aware_template_gets_tool_turns_and_the_tools():
    p = replace(tools.plan([WEATHER, TIME], "required"), format=tool_formats.HERMES)
    said = tools.past_calls([("get_weather", '{"city": "Oslo"}', "call_1")], "Let me look.")
    native = tools.with_instructions([{"role": "user", "content": "Oslo?"}, said, tools.past_result("12 C", call="call_1")], p)
    assert native[0] == {"role": "user", "content": "Oslo?"}  # no instructions: the template tells the tools
    assert native[1]["content"] == "Let me look."
    assert json.loads(native[1]["tool_calls"]) == [{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_1"}]
    assert native[2] == {"role": "tool", "content": "12 C", "tool_call_id": "call_1"}
    options = tools.sampling_options(p)
    assert [t["function"]["name"] for t in options["tools"]] == ["get_weather", "get_time"]
    assert options["assistant_prefix"] == "<tool_call>\n"
    jsonschema.validate({"name": "get_time", "arguments": {}}, json.loads(options["json_schema"]))
    # auto: the tools told, nothing forced
    assert set(tools.sampling_options(replace(p, choice="auto"))) == {"tools"}


QWEN_LIKE = "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools> in <tool_call></tool_call> tags{% endif %}"
LLAMA31_LIKE = "<|start_header_id|>ipython<|end_header_id|>{% if tools %}{{ tools }}{% endif %}<|eot_id|>"


@pytest.mark.parametrize("template, fmt", [
    (QWEN_LIKE, tool_formats.HERMES),
    ("{% if tools %}[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]", tool_formats.MISTRAL),
    (LLAMA31_LIKE, tool_formats.LLAMA3),
    ("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", None),  # SmolLM2's: no tools
    ("{% if tools %}{{ tools }}{% endif %}", None),  # tools in a syntax not known here: the generic form
    (None, None),
])
def test_templates_are_told_apart(template, fmt):
    assert tool_formats.detect(template) is fmt


@pytest.mark.parametrize("fmt, answer, text, calls", [
    (tool_formats.HERMES, 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
                          '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
     "Sure.", [("get_weather", {"city": "Oslo"}), ("get_time", {})]),
    (tool_formats.HERMES, '<tool_call>\n{"name": "get_time", "arguments": "{}"}', "", [("get_time", {})]),  # cut before its end tag
    (tool_formats.HERMES, "No call here.", "No call here.", []),
    (tool_formats.MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_time", "arguments": {}}]',
     "", [("get_weather", {"city": "Oslo"}), ("get_time", {})]),
    (tool_formats.MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}', "", [("get_weather", {"city": "Oslo"})]),
    (tool_formats.LLAMA3, '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}', "", [("get_weather", {"city": "Oslo"})]),
    (tool_formats.LLAMA3, "It is sunny {probably}.", "It is sunny {probably}.", []),
])
def test_each_syntax_is_read_back(fmt, answer, text, calls):
    assert fmt.read(answer) == (text, calls)


@pytest.mark.parametrize("fmt, answer", [
    (tool_formats.HERMES, 'Let me check.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),
    (tool_formats.MISTRAL, 'Let me check.[TOOL_CALLS][{"name": "get_time", "arguments": {}}]'),
    (tool_formats.LLAMA3, '{"name": "get_time", "parameters": {}}'),
    (tool_formats.HERMES, "Just text, with a < and a <tool in it."),
])
@given(cuts=st.lists(st.integers(0, 90), max_size=12))
def test_native_text_streams_up_to_the_call_however_it_is_cut(fmt, answer, cuts):
    p = replace(tools.plan([WEATHER, TIME], "auto"), format=fmt)
    whole_text, whole_calls = tools.parse(answer, p)
    shown, calls = _streamed(answer, cuts, p)
    assert shown.rstrip() == (whole_text or "").rstrip()
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole_calls]
    assert "<tool_call" not in shown and "[TOOL_CALLS" not in shown and '{"name"' not in shown


def _streamed(text: str, cuts: list[int], p: tools.Plan) -> tuple[str, tuple]:
    stream = tools.ReplyStream(p)
    shown = ""
    last = 0
    for cut in sorted(set(cuts)) + [len(text)]:
        shown += stream.feed(text[last:cut])
        last = cut
    rest, calls = stream.finish()
    return shown + (rest or ""), calls


@given(st.text(max_size=40), st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_streamed_text_is_the_whole_answer_however_it_is_cut(said, cuts):
    p = tools.plan([WEATHER], "auto")
    text = json.dumps({"response": said})
    shown, calls = _streamed(text, [c for c in cuts if c <= len(text)], p)
    assert shown == said and calls == []


@given(st.lists(st.integers(min_value=0, max_value=80), max_size=8))
def test_streamed_calls_come_whole_at_the_end(cuts):
    p = tools.plan([WEATHER], "required")
    text = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich \"Nord\""}}]}, ensure_ascii=False)
    shown, calls = _streamed(text, [c for c in cuts if c <= len(text)], p)
    assert shown == "" and [json.loads(c.arguments) for c in calls] == [{"city": 'Zürich "Nord"'}]


def test_a_text_answer_cut_short_keeps_what_was_decoded():
    shown, calls = _streamed('{"response": "Hello wor', [5, 17], tools.plan([WEATHER], "auto"))
    assert shown == "Hello wor" and calls == []
