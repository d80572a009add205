"""`python -m bench --smoke` runs end to end and reports all seven rows (nothing about speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-smoke")
    log = out / "harness.log"
    with log.open("w") as sink:
        harness = subprocess.Popen([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                                   cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            code = harness.wait(timeout=900)
        except subprocess.TimeoutExpired:
            harness.terminate()  # SIGTERM: the harness stops what it started, then exits
            harness.wait(timeout=120)
            raise
    assert code == 0, log.read_text()[-6000:]
    [json_path] = sorted(out.glob("*.json"))
    [md_path] = sorted(out.glob("*.md"))
    return json.loads(json_path.read_text()), md_path.read_text()


def test_smoke_run_reports_all_seven_rows(smoke_results) -> None:
    results, _ = smoke_results
    assert sorted(row["row"] for row in results["rows"]) == [1, 2, 3, 4, 5, 6, 7]
    for row in results["rows"]:
        assert row["title"] and "cells" in row and "service" in row["cells"]


def test_smoke_rows_that_need_only_the_service_produce_figures(smoke_results) -> None:
    results, _ = smoke_results
    rows = {row["row"]: row for row in results["rows"]}
    for number in (1, 2, 3, 4, 6, 7):
        assert "error" not in rows[number]["figures"], rows[number]["figures"]
    assert rows[1]["figures"]["service"]["one_client"]["n"] > 0
    assert rows[3]["figures"]["per_turn"]["service"]["turns"] > 0


def test_the_census_sees_the_question_committed_before_each_provider_call(smoke_results) -> None:
    # Row 1's condition, read from PostgreSQL's statement log (a multi-line CTE statement).
    results, _ = smoke_results
    row1 = next(row for row in results["rows"] if row["row"] == 1)
    assert row1["figures"]["commit_before_call"]["user_message_inserted_before_call"] is True


def test_smoke_markdown_table_has_a_line_per_row_and_names_the_machine(smoke_results) -> None:
    results, table = smoke_results
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(body) == 1 + 7  # header and seven rows
    assert results["machine"]["cpu"] in table
    assert results["machine"]["nproc"] >= 1


def test_mock_streams_both_wire_protocols_with_its_pacing() -> None:
    import time

    import anthropic
    import httpx
    import openai

    from bench.common import free_port
    from bench.mock_provider import TOKEN_TEXT

    port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_provider", "--port", str(port),
                             "--ttft-ms", "150", "--pacing-ms", "1", "--tokens", "5"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert mock.stdout is not None
        assert mock.stdout.readline().startswith("READY")
        chat = openai.OpenAI(api_key="unused", base_url=f"http://127.0.0.1:{port}/v1")
        started = time.perf_counter()
        stream = chat.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        pieces, usage, first = [], None, None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        assert "".join(pieces) == TOKEN_TEXT * 5
        assert usage is not None and usage.completion_tokens == 5
        assert first is not None and first >= 0.14
        httpx.post(f"http://127.0.0.1:{port}/_config", json={"tokens": 3, "ttft_ms": 0})
        messages = anthropic.Anthropic(api_key="unused", base_url=f"http://127.0.0.1:{port}")
        with messages.messages.stream(model="claude-x", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}]) as reply:
            assert "".join(reply.text_stream) == TOKEN_TEXT * 3
            assert reply.get_final_message().usage.output_tokens == 3
    finally:
        mock.terminate()
        mock.wait(timeout=10)
