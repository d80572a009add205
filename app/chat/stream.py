"""Parts of the AI SDK UI message stream (v1) and their SSE encoding."""

from __future__ import annotations

import json
from typing import Any

STREAM_HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
DONE = "[DONE]"


def event_id(run_id: Any, seq: int) -> str:
    """SSE id of a part: run and position, so Last-Event-ID resumes exactly after it."""
    return f"{run_id}:{seq}"


def parse_event_id(value: str | None) -> tuple[str | None, int]:
    """(run id, seq) from a Last-Event-ID header; (None, 0) when absent or malformed."""
    if not value or ":" not in value:
        return None, 0
    run_id, _, seq = value.rpartition(":")
    try:
        return run_id, max(0, int(seq))
    except ValueError:
        return None, 0


def encode(part: dict[str, Any]) -> str:
    """A part's JSON, as stored and as sent."""
    return json.dumps(part, separators=(",", ":"), default=str)


def opening(*, reply_id: Any, question_id: Any, question_seq: int, thread_id: Any, run_id: Any,
            budget: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The parts every reply starts with: its ids, then the budget verdict if any."""
    parts = [start(reply_id), data("message", {
        "id": str(question_id), "sequenceNumber": question_seq,
        "assistantMessageId": str(reply_id), "threadId": str(thread_id), "runId": str(run_id)})]
    if budget is not None:
        parts.append(data("budget", budget))
    return parts


def start(message_id: Any) -> dict[str, Any]:
    """The reply begins; messageId is the persisted assistant message."""
    return {"type": "start", "messageId": str(message_id)}


def data(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A custom data part (`data-message`, `data-usage`, `data-budget`, ...)."""
    return {"type": f"data-{name}", "data": payload}


def text_start(part_id: str) -> dict[str, Any]:
    """A text block opens."""
    return {"type": "text-start", "id": part_id}


def text_delta(part_id: str, delta: str) -> dict[str, Any]:
    """More text of an open block."""
    return {"type": "text-delta", "id": part_id, "delta": delta}


def text_end(part_id: str) -> dict[str, Any]:
    """A text block closes."""
    return {"type": "text-end", "id": part_id}


def tool_input(call_id: Any, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The model called a tool; toolCallId is the recorded tool call's id."""
    return {"type": "tool-input-available", "toolCallId": str(call_id), "toolName": name,
            "input": arguments}


def tool_output(call_id: Any, output: Any) -> dict[str, Any]:
    """A tool's result."""
    return {"type": "tool-output-available", "toolCallId": str(call_id), "output": output}


def tool_error(call_id: Any, error: str) -> dict[str, Any]:
    """A tool failed; the model was told the same."""
    return {"type": "tool-output-error", "toolCallId": str(call_id), "errorText": error}


def source_document(source_id: str, title: str, filename: str | None = None) -> dict[str, Any]:
    """A cited knowledge-base document."""
    part: dict[str, Any] = {"type": "source-document", "sourceId": source_id,
                            "mediaType": "text/markdown", "title": title}
    if filename:
        part["filename"] = filename
    return part


FINISH_REASONS = {"complete": "stop", "error": "error", "interrupted": "interrupted",
                  "stopped": "other"}


def finish(status: str) -> dict[str, Any]:
    """The reply ended; messageMetadata says how (complete, stopped, error, interrupted)."""
    return {"type": "finish", "finishReason": FINISH_REASONS.get(status, "other"),
            "messageMetadata": {"status": status}}


def error(text: str) -> dict[str, Any]:
    """The reply failed; the text is safe to show a user."""
    return {"type": "error", "errorText": text}


def simple(kind: str) -> dict[str, Any]:
    """A part with no payload: start-step, finish-step, finish, abort."""
    return {"type": kind}
