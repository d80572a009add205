"""Request bodies of the thread API: plain `{content}` or the AI SDK transport's `{messages}`."""

from __future__ import annotations

from typing import Any

import msgspec

from app.errors import BadRequest, PayloadTooLarge

MAX_MESSAGE_CHARS = 32_000


class PostMessage(msgspec.Struct, rename="camel"):
    """Either `content`, or the AI SDK `DefaultChatTransport` body (last user message is new)."""

    content: str | None = None
    id: str | None = None
    messages: list[dict[str, Any]] | None = None
    trigger: str | None = None
    message_id: str | None = None


def message_text(body: PostMessage) -> str:
    """The new user message's text, validated."""
    text = body.content
    if text is None and body.messages:
        users = [m for m in body.messages if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            text = _ui_message_text(users[-1])
    if text is None:
        raise BadRequest("send {content} or {messages: [...UIMessage]} with a user message")
    text = text.strip()
    if not text:
        raise BadRequest("the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise PayloadTooLarge(f"a message may have at most {MAX_MESSAGE_CHARS} characters")
    if "\x00" in text:
        raise BadRequest("the message contains a NUL character")
    return text


def _ui_message_text(message: dict[str, Any]) -> str | None:
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [p["text"] for p in parts if isinstance(p, dict)
                 and p.get("type") == "text" and isinstance(p.get("text"), str)]
        return "".join(texts)
    content = message.get("content")
    return content if isinstance(content, str) else None
