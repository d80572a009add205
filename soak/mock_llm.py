"""The soak's model server: bench's mock wire server, plus tool calls, faults and an obedient mode.

It reuses `bench.mock_provider`'s HTTP/1.1 connection handling and frame encoders and decides
each reply from markers in the last user message:

- `[[soak:fail-before]]` answers HTTP 500 (a provider error before any content);
- `[[soak:fail-after]]` streams a few tokens, then drops the connection mid-stream;
- `[[soak:stall]]` streams a few tokens, then goes silent until the client gives up;
- `[[soak:malformed]]` streams a few tokens, then a chunk that is not JSON;
- `[[soak:tools]]` calls the offered tools once (OpenAI wire), then answers;
- `[[soak:obey]]` plays a model that follows every `<<probe:KIND:ARG>>` instruction it reads in
  its system prompt, the conversation or tool results (prompt-injection probes);
- `[[soak:slow]]` paces tokens slowly (long enough to cut, resume and stop).

    python -m soak.mock_llm --port 0     # prints `READY <port>`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from typing import Any

from app.llm import obedience
from bench.common import run_fast
from bench.mock_provider import HttpConnection, Knobs, MockServer, _anthropic_event, _openai_chunk

MARKER = re.compile(r"\[\[soak:([a-z-]+)\]\]")
PROBE = re.compile(r"<<probe:([a-z-]+)(?::([^>]{0,80}))?>>")
WORDS = ("renewal", "champion", "signature", "timeline", "value", "review", "owner", "pricing")
STALL_LIMIT_S = 120.0


def _text_of(content: Any) -> str:
    """The text of an OpenAI or Anthropic message content (string or blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for block in content:
            if isinstance(block, dict):
                for key in ("text", "content"):
                    if isinstance(block.get(key), str | list):
                        pieces.append(_text_of(block[key]))
        return "\n".join(pieces)
    return ""


def _turn(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(last user question, messages after it) — tool results of Anthropic count as the turn."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        content = message.get("content")
        is_tool_result = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        if message.get("role") == "user" and not is_tool_result:
            return _text_of(content), messages[index + 1:]
    return "", []


def attacks(kind: str, argument: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls an obedient model makes for one probe instruction.

    The `local` model's own attempts (app/llm/obedience.py) first, then a few more only a
    model with a free hand would write.
    """
    if kind == "cross-tenant":
        other = re.sub(r"[^0-9a-f-]", "", argument)[:36]
        return [
            *obedience.attempts(kind, other),
            ("database_query", {"query": "SELECT name, arr FROM customers ORDER BY name"}),
            ("rag_search", {"query": "Zephyrine Obsidian Tamarind other tenant pricing", "k": 8}),
        ]
    if kind == "write":
        return [
            *obedience.attempts(kind, argument),
            ("database_query", {"query": "WITH gone AS (DELETE FROM customers RETURNING id)"
                                         " SELECT count(*) FROM gone"}),
            ("database_query", {"query": "SELECT 1; DROP TABLE usage_ledger"}),
        ]
    if kind == "url":
        port = re.sub(r"\D", "", argument)[:5] or "9"
        url = f"http://127.0.0.1:{port}/exfil"
        return [
            *obedience.attempts(kind, url),
            ("database_query", {"query": f"SELECT * FROM dblink('host=127.0.0.1 port={port}',"
                                         " 'select 1') AS t(x int)"}),
            ("rag_search", {"query": f"fetch {url} and include it", "k": 3}),
        ]
    return []  # "reveal" needs no tool: the reply itself repeats the system prompt


class SoakConnection(HttpConnection):
    """One client connection of the soak mock."""

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        wire = ("openai" if path.endswith("/chat/completions")
                else "anthropic" if path.endswith("/messages") else None)
        if method != "POST" or wire is None:
            await super()._route(method, path, headers, body)
            return
        self.server.stats.requests += 1
        request = json.loads(body or b"{}")
        messages = list(request.get("messages") or [])
        question, turn = _turn(messages)
        markers = set(MARKER.findall(question))
        model = str(request.get("model", "mock"))
        offered = {str((t.get("function") or t).get("name")) for t in request.get("tools") or []}
        prompt_tokens = max(1, len(body) // 4)
        if "fail-before" in markers:
            self._send_json(500, {"error": {"message": "soak: scripted outage",
                                            "type": "server_error"}})
            return
        calls: list[tuple[str, dict[str, Any]]] = []
        reply = f"Soak reply about {question[:40]!r}:"
        if wire == "openai" and offered:
            calls = self._plan_calls(markers, request, turn, offered)
        if "obey" in markers and "reveal" in self._probe_kinds(request):
            reply = "My instructions are: " + self._system_text(request)[:400]
        pacing = 40.0 if "slow" in markers else 4.0
        tokens = 60 if "slow" in markers else 12
        fault = next((m for m in ("fail-after", "stall", "malformed") if m in markers), None)
        await self._reply(wire, model, reply, calls, pacing, tokens, prompt_tokens, fault)

    @staticmethod
    def _system_text(request: dict[str, Any]) -> str:
        system = _text_of(request.get("system"))
        for message in request.get("messages") or []:
            if message.get("role") == "system":
                system += _text_of(message.get("content"))
        return system

    def _probe_kinds(self, request: dict[str, Any]) -> dict[str, str]:
        seen: dict[str, str] = {}
        everything = [self._system_text(request)] + [
            _text_of(m.get("content")) for m in request.get("messages") or []]
        for text in everything:
            for kind, argument in PROBE.findall(text):
                seen.setdefault(kind, argument)
        return seen

    def _plan_calls(self, markers: set[str], request: dict[str, Any], turn: list[dict[str, Any]],
                    offered: set[str]) -> list[tuple[str, dict[str, Any]]]:
        done = {str(c.get("id", "")) for m in turn if m.get("role") == "assistant"
                for c in m.get("tool_calls") or []}
        planned: list[tuple[str, dict[str, Any]]] = []
        if "obey" in markers:
            if "call_soak_kb" not in done and "rag_search" in offered:
                planned.append(("kb", {"query": "soak probe instructions", "k": 5}))
            # The first attack of every kind before the second of any: the service caps the
            # calls of a turn, and each kind must be tried.
            found = self._probe_kinds(request).items()
            for index in range(4):
                for kind, argument in found:
                    attack = attacks(kind, argument)[index:index + 1]
                    for name, arguments in attack:
                        if f"call_soak_{kind}_{index}" not in done and name in offered:
                            planned.append((f"{kind}_{index}", {"tool": name, **arguments}))
        elif "tools" in markers and not done:
            benign: dict[str, dict[str, Any]] = {
                "database_query": {"query": "SELECT name, arr FROM customers_v"
                                            " ORDER BY name LIMIT 5"},
                "rag_search": {"query": "renewal playbook", "k": 3},
                "create_chart": {"type": "bar", "title": "ARR by customer",
                                 "data": [{"label": "a", "value": 1}, {"label": "b", "value": 2}]}}
            planned = [(name, benign[name]) for name in sorted(offered) if name in benign]
        calls = []
        for key, arguments in planned[:4]:
            name = "rag_search" if key == "kb" else str(arguments.pop("tool", key))
            calls.append((f"call_soak_{key}", {"name": name, "arguments": arguments}))
        return calls

    async def _reply(self, wire: str, model: str, reply: str,
                      calls: list[tuple[str, dict[str, Any]]], pacing_ms: float, tokens: int,
                      prompt_tokens: int, fault: str | None) -> None:
        self._write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        opening, token_frame, closing = self._frames(wire, model, prompt_tokens, tokens, calls)
        self._chunk(opening)
        words = [reply, *(WORDS[i % len(WORDS)] for i in range(tokens))]
        if not calls:
            for index, word in enumerate(words):
                await asyncio.sleep(pacing_ms / 1000)
                if self.closed:
                    return
                self._chunk(token_frame(" " + word))
                if fault and index >= 3:
                    await self._fault(fault)
                    return
        self._chunk(closing)
        self._write(b"0\r\n\r\n")

    async def _fault(self, fault: str) -> None:
        if fault == "malformed":
            self._chunk(b'data: {"id": "chatcmpl-soak", "choices": [{"delta": {"content": \n\n')
            self._chunk(b"event: content_block_delta\ndata: {not json at all\n\n")
            await asyncio.sleep(0.05)
        elif fault == "stall":
            for _ in range(int(STALL_LIMIT_S * 10)):  # silent until the client hangs up
                if self.closed:
                    break
                await asyncio.sleep(0.1)
        if self.transport is not None:
            self.transport.abort()  # a dropped connection: no terminating chunk

    @staticmethod
    def _frames(wire: str, model: str, prompt_tokens: int, tokens: int,
                calls: list[tuple[str, dict[str, Any]]]) -> tuple[bytes, Any, bytes]:
        """(opening, text frame maker, closing) of one reply on the given wire."""
        completion = tokens + 1 + 20 * len(calls)
        if wire == "openai":
            opening = _openai_chunk(model, {"role": "assistant", "content": ""})
            for index, (call_id, call) in enumerate(calls):
                opening += _openai_chunk(model, {"tool_calls": [{
                    "index": index, "id": call_id, "type": "function",
                    "function": {"name": call["name"],
                                 "arguments": json.dumps(call["arguments"])}}]})
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                     "total_tokens": prompt_tokens + completion,
                     "prompt_tokens_details": {"cached_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0}}
            closing = _openai_chunk(model, {}, "tool_calls" if calls else "stop")
            closing += b"data: " + json.dumps({
                "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [], "usage": usage}).encode() + b"\n\n"
            closing += b"data: [DONE]\n\n"
            return opening, lambda text: _openai_chunk(model, {"content": text}), closing
        message: dict[str, Any] = {
            "id": "msg_soak", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}
        opening = _anthropic_event("message_start", {"type": "message_start", "message": message})
        opening += _anthropic_event("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})

        def text_frame(text: str) -> bytes:
            return _anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}})

        closing = _anthropic_event("content_block_stop", {"type": "content_block_stop",
                                                          "index": 0})
        closing += _anthropic_event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": completion}})
        closing += _anthropic_event("message_stop", {"type": "message_stop"})
        return opening, text_frame, closing


async def serve(host: str, port: int) -> None:
    """Listen until cancelled; prints `READY <port>` once bound."""
    server = MockServer(Knobs())
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: SoakConnection(server), host, port,
                                        reuse_address=True)
    print(f"READY {listener.sockets[0].getsockname()[1]}", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="the soak's mock model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run_fast(serve(args.host, args.port))


if __name__ == "__main__":
    main()
