"""The state of one interactive chat: the model, the system prompt, the
parameters the user set and the conversation, and how each changes.
No I/O here: the chat loop applies these and prints what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.client.cli_options import CONTEXT_LENGTH, PARAMETERS, check_stops, checked_text
from corral.supervisor.errors import UsageError

ROLES = ("user", "assistant")


@dataclass
class ChatSession:
    model: str
    system: str | None = None
    # sampling options the user set, by client keyword (unset: model defaults)
    options: dict[str, Any] = field(default_factory=dict)
    # how the model is loaded: keep_alive, ignore_memory_check, model_type, context_length
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # the conversation, without the system prompt
    messages: list[dict[str, str]] = field(default_factory=list)
    verbose: bool = False

    def request(self, text: str) -> list[dict[str, str]]:
        """The messages of the request that sends ``text``."""
        start = [{"role": "system", "content": self.system}] if self.system else []
        return [*start, *self.messages, {"role": "user", "content": text}]

    def add_turn(self, text: str, answer: str) -> None:
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest messages, as the worker left them out
        to fit the context (the system prompt is never among them)."""
        del self.messages[: max(0, count)]

    def clear(self) -> None:
        self.messages.clear()

    def set_system(self, text: str) -> None:
        text = checked_text(text, "the system prompt").strip()
        self.system = text or None

    def set_parameter(self, name: str, value: str) -> Any:
        """Set ``/set parameter NAME VALUE``; returns the checked value.
        ``num_ctx`` changes how the model loads: the caller reloads it."""
        if name == "stop":
            stops = check_stops(value.split())
            if stops:
                self.options["stop"] = stops
            else:
                self.options.pop("stop", None)
            return stops
        param = PARAMETERS.get(name)
        if param is None:
            known = ", ".join([*PARAMETERS, "stop"])
            raise UsageError(f"unknown parameter {name!r}; known: {known}")
        if not value:
            raise UsageError(f"/set parameter {name} needs a value")
        number = param.convert(value)
        (self.model_kwargs if param is CONTEXT_LENGTH else self.options)[param.kwarg] = number
        return number

    def parameters(self) -> list[tuple[str, Any]]:
        """The parameters set in this chat, by their Ollama names."""
        by_kwarg = {p.kwarg: name for name, p in PARAMETERS.items()}
        rows = [(by_kwarg.get(k, k), v) for k, v in self.options.items()]
        if self.model_kwargs.get("context_length") is not None:
            rows.append(("num_ctx", self.model_kwargs["context_length"]))
        return rows

    # -- saved chats ------------------------------------------------------

    def as_record(self) -> dict[str, Any]:
        return {"model": self.model, "system": self.system, "options": self.options, "messages": self.messages}

    def restore(self, record: Any) -> None:
        """Take a saved chat's system prompt, parameters and conversation,
        checked as if the user typed them; the model stays."""
        if not isinstance(record, dict):
            raise UsageError("a saved chat must be a JSON object")
        messages = record.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
        ):
            raise UsageError("a saved chat needs 'messages': a list of user and assistant messages")
        system, options = record.get("system"), record.get("options") or {}
        if system is not None and not isinstance(system, str) or not isinstance(options, dict):
            raise UsageError("a saved chat's 'system' must be text and its 'options' an object")
        checked = ChatSession(self.model)
        checked.set_system(system or "")
        by_kwarg = {p.kwarg: name for name, p in PARAMETERS.items()}
        for kwarg, value in options.items():
            if kwarg == "stop" and isinstance(value, list):
                checked.options["stop"] = check_stops([str(s) for s in value])
            elif kwarg in by_kwarg and not isinstance(value, (bool, list, dict)):
                checked.set_parameter(by_kwarg[kwarg], str(value))
            else:
                raise UsageError(f"a saved chat has an unknown option {kwarg!r}")
        self.system, self.options = checked.system, checked.options
        self.messages = [{"role": m["role"], "content": checked_text(m["content"], "a saved message")} for m in messages]
