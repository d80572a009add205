"""Scripted replies shared by the fake OpenAI and Anthropic servers.

A fake answers each request with the next reply from its queue (or its `default` when the queue
is empty), and records every request body. Replies are wire-neutral; each fake renders them in its
own protocol.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class FakeUsage:
    """Token numbers a fake reports; Anthropic-only fields are ignored by the OpenAI fake."""

    input_tokens: int = 12
    output_tokens: int = 7
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    # Anthropic: cumulative output_tokens of successive message_delta events; () = one event.
    output_steps: tuple[int, ...] = ()


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call to stream; `arguments` as a str is sent verbatim (e.g. broken JSON)."""

    name: str
    arguments: dict[str, Any] | str
    id: str = ""
    fragments: int = 3


@dataclass(frozen=True)
class TextReply:
    """A successful streamed reply: text chunks, then tool calls, then usage (None: none sent)."""

    chunks: tuple[str, ...] = ("Hello", " there", "!")
    tool_calls: tuple[FakeToolCall, ...] = ()
    usage: FakeUsage | None = field(default_factory=FakeUsage)
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None  # None: inferred
    chunk_delay: float = 0.0
    model: str | None = None  # None: echo the requested model

    @property
    def text(self) -> str:
        """The whole text the reply streams."""
        return "".join(self.chunks)

    @property
    def effective_finish_reason(self) -> str:
        """The finish reason sent: explicit, else tool_calls when calls are made, else stop."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error answered before any content."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    retry_after: float | None = None


@dataclass(frozen=True)
class AbortReply:
    """Some text chunks, then the stream fails: connection cut, or an in-stream error event."""

    chunks: tuple[str, ...] = ("Partial", " answer")
    how: Literal["close", "error_event", "malformed"] = "close"
    usage: FakeUsage | None = field(default_factory=FakeUsage)


@dataclass(frozen=True)
class StallReply:
    """Some text chunks, then silence (or only keep-alive pings) until the client gives up."""

    chunks: tuple[str, ...] = ("Thinking",)
    seconds: float = 30.0
    ping_interval: float | None = None


Reply = TextReply | ErrorReply | AbortReply | StallReply


def text_reply(text: str, *, words_per_chunk: int = 1, **options: Any) -> TextReply:
    """A `TextReply` streaming `text` a few words at a time."""
    words = text.split(" ")
    chunks = [
        " ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)
    ]
    # Each chunk after the first carries its leading space, as real streams do.
    pieces = tuple(chunk if i == 0 else " " + chunk for i, chunk in enumerate(chunks))
    return TextReply(chunks=pieces, **options)


def tool_call_reply(*calls: FakeToolCall, text: str = "", **options: Any) -> TextReply:
    """A `TextReply` that makes tool calls, optionally after some text."""
    return TextReply(chunks=(text,) if text else (), tool_calls=calls, **options)


def split_evenly(text: str, parts: int) -> list[str]:
    """`text` cut into `parts` consecutive pieces (fewer when text is short)."""
    parts = max(1, min(parts, len(text) or 1))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ScriptedFake:
    """Queue of scripted replies and log of received requests, shared with the server thread."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.client_ports: list[int] = []  # the TCP port each request came from (its connection)

    def enqueue(self, *replies: Reply) -> None:
        """Script the next replies, answered in order."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget scripted replies and received requests."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.request_headers.clear()
            self.client_ports.clear()

    @property
    def request_count(self) -> int:
        """How many model requests arrived."""
        with self._lock:
            return len(self.requests)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._queue)

    def take(self, body: dict[str, Any], headers: dict[str, str],
             client: tuple[str, int] | None = None) -> Reply | None:
        """Record one request and pick its reply."""
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            if client is not None:
                self.client_ports.append(client[1])
            if self._queue:
                return self._queue.popleft()
            return self.default
