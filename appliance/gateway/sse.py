"""Reading an engine's server-sent events as they pass: token usage, errors, the end.

The gateway asks the engine for a final usage chunk (``stream_options.include_usage``) so every
stream is counted; if the client did not ask for it, that chunk is dropped on the way through.
"""

from __future__ import annotations

import json
from typing import Any

DONE = "data: [DONE]"


def model_renaming(served: str, requested: str) -> tuple[str, str] | None:
    """Answers name the model as the client did, not the engine's deployment (which the client
    never sees); vLLM writes the field as ``"model":"NAME"``."""
    if served == requested:
        return None
    return '"model":' + json.dumps(served), '"model":' + json.dumps(requested)


def usage_of(document: dict[str, Any]) -> tuple[int, int] | None:
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


class StreamMeter:
    """Feeds on an engine's SSE lines; says what to forward and remembers usage and errors."""

    def __init__(self, *, client_wants_usage: bool, rename: tuple[str, str] | None = None) -> None:
        self.client_wants_usage = client_wants_usage
        self.rename = rename  # (the engine's name, the client's name) for the ``model`` field
        self.usage: tuple[int, int] | None = None
        self.error_code = ""
        self.content_chunks = 0  # the fallback count of generated tokens (vLLM: one per chunk)

    def tokens(self, prompt_estimate: int) -> tuple[int, int]:
        """The engine's usage, or (for a stream cut short) an estimate from what passed."""
        return self.usage or (prompt_estimate, self.content_chunks)

    def feed(self, line: str) -> bytes | None:
        """The bytes to send on for one line (None: nothing)."""
        if not line:
            return None
        if not line.startswith("data:"):
            return (line + "\n").encode()  # comments and other fields pass through
        if line == DONE:
            return (line + "\n\n").encode()
        if '"usage"' in line or '"error"' in line:
            forward = self._inspect(line[5:].strip())
            if not forward:
                return None
        else:
            self.content_chunks += 1
        if self.rename is not None:
            line = line.replace(self.rename[0], self.rename[1], 1)
        return (line + "\n\n").encode()

    def _inspect(self, payload: str) -> bool:
        """Whether to forward this chunk."""
        try:
            document = json.loads(payload)
        except ValueError:
            return True
        if not isinstance(document, dict):
            return True
        if "error" in document:
            error = document["error"]
            code = error.get("code") if isinstance(error, dict) else None
            self.error_code = str(code or "engine_error")[:40]
            return True
        usage = usage_of(document)
        if usage is not None:
            self.usage = usage
        if document.get("choices"):
            self.content_chunks += 1
            return True
        return usage is None or self.client_wants_usage


def _add_text(texts: dict[int, list[str]], choice: Any, part: str) -> None:
    """Append the text of one choice (``message``/``delta`` content in chat, ``text`` otherwise)."""
    if not isinstance(choice, dict):
        return
    holder = choice.get(part)
    text = holder.get("content") if isinstance(holder, dict) else choice.get("text")
    if isinstance(text, str) and text:
        index = choice.get("index", 0)
        texts.setdefault(index if isinstance(index, int) else 0, []).append(text)


def _joined(texts: dict[int, list[str]]) -> list[str]:
    return ["".join(texts[index]) for index in sorted(texts)]


def choice_texts(document: Any) -> list[str]:
    """The text of each choice of a (non-streamed) answer, in index order."""
    texts: dict[int, list[str]] = {}
    choices = document.get("choices") if isinstance(document, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        _add_text(texts, choice, "message")
    return _joined(texts)


class CapturingStreamMeter(StreamMeter):
    """A StreamMeter that also collects the text of each choice, for applications whose content
    is kept (the others use the plain meter and parse no more than before)."""

    def __init__(self, *, client_wants_usage: bool, rename: tuple[str, str] | None = None) -> None:
        super().__init__(client_wants_usage=client_wants_usage, rename=rename)
        self._texts: dict[int, list[str]] = {}

    def feed(self, line: str) -> bytes | None:
        if line.startswith("data:") and line != DONE:
            try:
                document = json.loads(line[5:])
            except ValueError:
                document = None
            choices = document.get("choices") if isinstance(document, dict) else None
            for choice in choices if isinstance(choices, list) else ():
                _add_text(self._texts, choice, "delta")
        return super().feed(line)

    def texts(self) -> list[str]:
        """The concatenated deltas of each choice, in index order."""
        return _joined(self._texts)
