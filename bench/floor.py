"""The floor: a bare Litestar app relaying the mock through the `openai` SDK.

No auth, no ORM, no tokenizer. `POST /relay?pre=K&pre_tx=T&post=M&post_tx=U` makes K asyncpg round
trips before the provider call (T of them transactions that insert a row and commit: what
committing the user message costs at the least) and M after it, so the same app is also the
persistence floor: a bare handler doing the service's number of round trips and commits.
Streamed answers use the service's wire format (`data: {"type":"text-delta",...}` then
`data: [DONE]`), so clients read both the same way.

    python -m bench.floor --port N --mock http://127.0.0.1:M/v1 [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from litestar import Litestar, Request, post
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage


def create_floor_app(mock_base_url: str, dsn: str | None, pool_size: int = 10) -> Litestar:
    """The floor app; one SDK client and (with a DSN) one asyncpg pool for its lifetime."""
    import logging

    for name in ("httpx", "httpx2"):  # a log line per provider call is no part of a floor
        logging.getLogger(name).setLevel(logging.WARNING)
    state: dict[str, Any] = {}

    async def startup() -> None:
        state["client"] = openai.AsyncOpenAI(api_key="unused", base_url=mock_base_url,
                                             max_retries=0, timeout=60)
        if dsn:
            import asyncpg

            state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
            await state["pool"].execute(
                "CREATE TABLE IF NOT EXISTS bench_floor_rows (id bigserial PRIMARY KEY, n int,"
                " at timestamptz NOT NULL DEFAULT now())")

    async def shutdown() -> None:
        await state["client"].close()
        if "pool" in state:
            await state["pool"].close()

    async def round_trips(count: int, transactions: int) -> None:
        """`count` statements; `transactions` of them open a transaction that writes a row and
        commits (a durable commit, as the service's), the rest are plain SELECTs."""
        if count <= 0:
            return
        transactions = min(transactions, count // 3)
        left = count
        async with state["pool"].acquire() as conn:
            for number in range(transactions):
                share = left // (transactions - number)  # BEGIN, INSERT, COMMIT and SELECTs
                async with conn.transaction():
                    await conn.execute("INSERT INTO bench_floor_rows (n) VALUES ($1)", number)
                    for extra in range(share - 3):
                        await conn.fetchval("SELECT $1::int", extra)
                left -= share
            for extra in range(left):
                await conn.fetchval("SELECT $1::int", extra)

    @post("/relay", status_code=200)
    async def relay(request: Request[Any, Any, Any], data: dict[str, Any], pre: int = 0,
                    post: int = 0, pre_tx: int = 0, post_tx: int = 0) -> Any:
        """Relay one turn to the mock: SSE when asked for it, else JSON when it is done."""
        await round_trips(pre, pre_tx)
        messages = [{"role": "user", "content": str(data.get("content", ""))}]
        client: openai.AsyncOpenAI = state["client"]
        if "text/event-stream" not in request.headers.get("accept", ""):
            answer = await client.chat.completions.create(model="gpt-4o-mini",
                                                          messages=messages)  # type: ignore[arg-type]
            await round_trips(post, post_tx)
            return {"content": answer.choices[0].message.content,
                    "usage": answer.usage.model_dump() if answer.usage else None}

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            stream = await client.chat.completions.create(  # type: ignore[call-overload]
                model="gpt-4o-mini", messages=messages, stream=True,
                stream_options={"include_usage": True})
            async for chunk in stream:
                for choice in chunk.choices[:1]:
                    if choice.delta is not None and choice.delta.content:
                        yield ServerSentEventMessage(data=json.dumps(
                            {"type": "text-delta", "id": "text-0", "delta": choice.delta.content},
                            separators=(",", ":")))
            await round_trips(post, post_tx)
            yield ServerSentEventMessage(data="[DONE]")

        return ServerSentEvent(events())

    return Litestar(route_handlers=[relay], on_startup=[startup], on_shutdown=[shutdown],
                    debug=False, openapi_config=None)


def main(argv: list[str] | None = None) -> None:
    """Serve the floor with uvicorn (same server and loop as the service)."""
    import uvicorn

    parser = argparse.ArgumentParser(description="the benchmark floor app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mock", required=True, help="the mock's OpenAI base URL (…/v1)")
    parser.add_argument("--dsn", default=None, help="asyncpg DSN for the persistence floor")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers > 1:
        import os

        os.environ["BENCH_FLOOR_MOCK"], os.environ["BENCH_FLOOR_DSN"] = args.mock, args.dsn or ""
        uvicorn.run("bench.floor:app_from_env", factory=True, host="127.0.0.1", port=args.port,
                    workers=args.workers, log_level="warning", access_log=False)
        return
    uvicorn.run(create_floor_app(args.mock, args.dsn), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


def app_from_env() -> Litestar:
    """The floor app for uvicorn's worker processes (configured through the environment)."""
    import os

    return create_floor_app(os.environ["BENCH_FLOOR_MOCK"], os.environ["BENCH_FLOOR_DSN"] or None)


if __name__ == "__main__":
    main()
