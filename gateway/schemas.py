"""Request bodies of every route, as msgspec structs.

One definition serves three jobs: decoding (fast, in one pass, and the error
names the field: ``max_tokens: Expected `int` >= 1``), bounds on every value,
and the gateway's OpenAPI schema (``openapi.py``). Fields that clients send
but corral does not use are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from corral.supervisor.errors import BadRequest

ModelName = Annotated[str, Meta(min_length=1, max_length=256, description="a catalog or store name, e.g. ai/smollm2", examples=["ai/smollm2"])]
Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(gt=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
# A bound on generation length keeps one request from holding a worker for
# ever; no model here has a longer context.
MaxTokens = Annotated[int, Meta(ge=1, le=1_048_576)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Stop = str | Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=16)]
KeepAlive = Annotated[str, Meta(max_length=32)] | float


# GBNF text; a grammar past this size is a 400, not a worker's work
Grammar = Annotated[str, Meta(max_length=256 * 1024)]


class Sampling(Struct, kw_only=True):
    """Sampling fields shared by the OpenAI routes (with llama-server's
    extensions top_k, min_p, repeat_penalty)."""

    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    grammar: Grammar | None = None  # llama-server's: GBNF the answer must match
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class StreamOptions(Struct):
    include_usage: bool = False


class ContentPart(Struct):
    type: Annotated[str, Meta(max_length=32)]
    text: str | None = None


class FunctionSpec(Struct, kw_only=True):
    name: Annotated[str, Meta(max_length=256)]  # its form is checked by tools.function, with a message to match
    description: Annotated[str, Meta(max_length=64 * 1024)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(Struct, kw_only=True):
    type: Literal["function"]
    function: FunctionSpec


class CalledFunction(Struct, kw_only=True):
    name: Annotated[str, Meta(max_length=256)]
    arguments: str = ""  # JSON text


class ToolCall(Struct, kw_only=True):
    id: Annotated[str, Meta(max_length=256)] = ""
    type: Literal["function"] = "function"
    function: CalledFunction


class ChosenFunction(Struct):
    name: Annotated[str, Meta(max_length=256)]


class NamedToolChoice(Struct, kw_only=True):
    type: Literal["function"]
    function: ChosenFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
Tools = Annotated[list[ToolSpec], Meta(max_length=128)]


class ChatMessage(Struct):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Meta(max_length=128)] | None = None
    tool_call_id: Annotated[str, Meta(max_length=256)] | None = None


class ResponseFormatText(Struct, tag_field="type", tag="text"):
    pass


class ResponseFormatJSONObject(Struct, tag_field="type", tag="json_object"):
    pass


class JSONSchemaSpec(Struct):
    name: Annotated[str, Meta(max_length=64)] = "response"
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormatJSONSchema(Struct, tag_field="type", tag="json_schema"):
    json_schema: JSONSchemaSpec


ResponseFormat = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema


class ChatCompletionRequest(Sampling, kw_only=True):
    model: ModelName | None = None  # left out: as llama-server's routes (route_support.model_for)
    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=4096)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(Sampling, kw_only=True):
    model: ModelName | None = None
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=1)]
    echo: bool = False
    suffix: str | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None  # the legacy API: alternatives per token


class LlamaCompletionRequest(Struct, kw_only=True):
    """llama-server's native POST /completion (fields it has that corral
    does not use, such as mirostat, are ignored as llama-server ignores
    what it does not know)."""

    prompt: str | Annotated[list[Annotated[int, Meta(ge=0, le=2**31 - 1)]], Meta(max_length=1_000_000)]
    model: ModelName | None = None
    n_predict: Annotated[int, Meta(ge=-1, le=2**31 - 1)] | None = None
    stream: bool = False
    temperature: Annotated[float, Meta(ge=0, le=100)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    top_p: TopP | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1, le=2**31 - 1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=16)] | None = None
    grammar: Grammar | None = None
    json_schema: dict[str, Any] | None = None
    n_probs: Annotated[int, Meta(ge=0, le=20)] | None = None
    cache_prompt: bool = True  # corral's engine reuses a prompt's cells whenever it can
    id_slot: int | None = None


class LlamaTokenizeRequest(Struct, kw_only=True):
    content: Annotated[str, Meta(max_length=4 * 1024 * 1024)]
    model: ModelName | None = None
    add_special: bool = False
    with_pieces: bool = False


class LlamaDetokenizeRequest(Struct, kw_only=True):
    tokens: Annotated[list[Annotated[int, Meta(ge=0, le=2**31 - 1)]], Meta(max_length=1_000_000)]
    model: ModelName | None = None


class LlamaTemplateRequest(Struct, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=4096)]
    model: ModelName | None = None


class EmbeddingRequest(Struct, kw_only=True):
    model: ModelName | None = None
    input: str | Annotated[list[str], Meta(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class UnloadRequest(Struct, kw_only=True):
    all: bool = False
    backend: str = ""
    models: Annotated[list[ModelName], Meta(max_length=256)] = []


# -- OpenAI Responses ---------------------------------------------------------


class ResponsesFunctionTool(Struct, kw_only=True):
    type: Literal["function"]  # the hosted tools (web search, files...) are OpenAI's own
    name: Annotated[str, Meta(max_length=256)]
    description: Annotated[str, Meta(max_length=64 * 1024)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesNamedChoice(Struct, kw_only=True):
    type: Literal["function"]
    name: Annotated[str, Meta(max_length=256)]


class ResponsesFormat(Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: Annotated[str, Meta(max_length=64)] | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponsesText(Struct, kw_only=True):
    format: ResponsesFormat | None = None


class ResponsesRequest(Struct, kw_only=True):
    model: ModelName
    # a string, or input items (messages, function calls and their outputs),
    # checked item by item by responses_routes with errors naming the item
    input: str | Annotated[list[dict[str, Any]], Meta(min_length=1, max_length=4096)]
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stream: bool = False
    tools: Annotated[list[ResponsesFunctionTool], Meta(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedChoice | None = None
    parallel_tool_calls: bool | None = None
    text: ResponsesText | None = None
    previous_response_id: Annotated[str, Meta(max_length=128)] | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    user: str | None = None


# -- Anthropic Messages ---------------------------------------------------------


class AnthropicBlock(Struct, kw_only=True):
    """Any content block; anthropic_routes checks each by its type."""

    type: Annotated[str, Meta(max_length=64)]
    text: str | None = None
    id: Annotated[str, Meta(max_length=256)] | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None
    input: dict[str, Any] | None = None
    tool_use_id: Annotated[str, Meta(max_length=256)] | None = None
    content: str | Annotated[list[dict[str, Any]], Meta(max_length=1024)] | None = None
    is_error: bool | None = None


class AnthropicMessage(Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[AnthropicBlock], Meta(max_length=4096)]


class AnthropicTool(Struct, kw_only=True):
    name: Annotated[str, Meta(max_length=256)]
    description: Annotated[str, Meta(max_length=64 * 1024)] | None = None
    input_schema: dict[str, Any]
    type: Annotated[str, Meta(max_length=64)] | None = None


class AnthropicToolChoice(Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: Annotated[str, Meta(max_length=256)] | None = None
    disable_parallel_tool_use: bool = False


class AnthropicCountRequest(Struct, kw_only=True):
    model: ModelName
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1, max_length=4096)]
    system: str | Annotated[list[AnthropicBlock], Meta(max_length=256)] | None = None
    tools: Annotated[list[AnthropicTool], Meta(max_length=128)] | None = None
    tool_choice: AnthropicToolChoice | None = None


class AnthropicRequest(AnthropicCountRequest, kw_only=True):
    max_tokens: MaxTokens
    stop_sequences: Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=16)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


# -- Ollama --------------------------------------------------------------


class OllamaOptions(Struct, kw_only=True):
    """The options corral applies; Ollama's other knobs (GPU layers, NUMA, ...)
    are accepted and ignored, as Ollama itself ignores unknown ones."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: Seed | None = None
    num_predict: Annotated[int, Meta(ge=-2, le=1_048_576)] | None = None
    stop: Stop | None = None
    num_ctx: Annotated[int, Meta(ge=16, le=1_048_576)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1, le=1_048_576)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None


class OllamaCalledFunction(Struct, kw_only=True):
    name: Annotated[str, Meta(max_length=256)]
    arguments: dict[str, Any] = {}


class OllamaToolCall(Struct, kw_only=True):
    function: OllamaCalledFunction


class OllamaMessage(Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: Annotated[list[OllamaToolCall], Meta(max_length=128)] | None = None
    tool_name: Annotated[str, Meta(max_length=256)] | None = None


class OllamaRequest(Struct, kw_only=True):
    model: ModelName
    stream: bool = True
    options: OllamaOptions | None = None
    keep_alive: KeepAlive | None = None
    format: Annotated[str, Meta(max_length=16)] | dict[str, Any] | None = None


class OllamaGenerateRequest(OllamaRequest, kw_only=True):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[str] | None = None


class OllamaChatRequest(OllamaRequest, kw_only=True):
    messages: Annotated[list[OllamaMessage], Meta(max_length=4096)] = []
    tools: Tools | None = None


class OllamaShowRequest(Struct, kw_only=True):
    model: ModelName | None = None
    name: ModelName | None = None


class OllamaEmbedRequest(Struct, kw_only=True):
    model: ModelName
    input: str | Annotated[list[str], Meta(min_length=1, max_length=2048)]
    keep_alive: KeepAlive | None = None


class OllamaPullRequest(Struct, kw_only=True):
    model: ModelName | None = None
    name: ModelName | None = None
    insecure: bool = False
    stream: bool = True


class CreateModelRequest(Struct, kw_only=True):
    """Docker Model Runner's ``POST /models/create``: pull ``from``."""

    from_: ModelName = msgspec.field(name="from")


REQUEST_BODIES: tuple[type, ...] = (
    ChatCompletionRequest,
    ResponsesRequest,
    AnthropicRequest,
    AnthropicCountRequest,
    CompletionRequest,
    EmbeddingRequest,
    UnloadRequest,
    OllamaGenerateRequest,
    OllamaChatRequest,
    OllamaShowRequest,
    OllamaEmbedRequest,
    OllamaPullRequest,
    CreateModelRequest,
)

T = TypeVar("T")
_decoders: dict[type, msgspec.json.Decoder] = {}
_PATH = re.compile(r" - at `\$\.?(.*)`$")


def decode_body(body: bytes, kind: type[T]) -> T:
    """The body as ``kind``, or BadRequest naming the field that is wrong."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(_field_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); send a JSON object") from None
    except RecursionError:  # JSON nested thousands deep in a free-form field
        raise BadRequest("the request body nests arrays or objects too deeply; flatten it") from None


def _field_message(text: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.max_tokens``` as
    ``max_tokens: Expected `int`, got `str```."""
    match = _PATH.search(text)
    if match and match[1]:
        return f"{match[1]}: {text[: match.start()]}"
    if text.startswith("Object missing required field"):
        return text.replace("Object missing", "the request body is missing")
    return f"the request body: {text}"
