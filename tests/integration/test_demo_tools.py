"""The demo with no key: the local model cites the knowledge base, queries data and draws a chart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import thread_rows
from tests.live import read_stream

ROOT = Path(__file__).resolve().parents[2]


def parts(events, kind):
    return [e.part for e in events if e.part and e.part["type"] == kind]


async def test_local_model_answers_with_citations_a_table_and_a_chart(
        http, auth, new_thread, owner_engine):
    rag = await new_thread("local", tools=["rag_search"])
    _, events = await read_stream(http, "POST", f"/api/threads/{rag}/messages", headers=auth(),
                                  json={"content": "What does the discount policy allow?"})
    sources = parts(events, "source-document")
    assert sources and all(s["title"] for s in sources)
    rows = await thread_rows(owner_engine, rag)
    (call,) = rows["calls"]
    assert call.tool_name == "rag_search" and call.success and call.latency_ms is not None
    assert "[1]" in rows["messages"][-1].content

    data = await new_thread("local", tools=["database_query", "create_chart"])
    _, events = await read_stream(http, "POST", f"/api/threads/{data}/messages", headers=auth(),
                                  json={"content": "List our contracts with their ARR"})
    (output,) = [p["output"] for p in parts(events, "tool-output-available")]
    assert output["columns"] and output["rows"] and output["sql"].lower().startswith("select")
    detail = (await http.get(f"/api/threads/{data}", headers=auth())).json()
    table = detail["messages"][-1]
    assert table["messageType"] == "table" and table["metadata"]["columns"] == output["columns"]

    _, events = await read_stream(http, "POST", f"/api/threads/{data}/messages", headers=auth(),
                                  json={"content": "Show me a chart of the ARR trend"})
    chart_output = next(p["output"] for p in parts(events, "tool-output-available")
                        if "chartId" in p["output"])
    detail = (await http.get(f"/api/threads/{data}", headers=auth())).json()
    chart = detail["messages"][-1]
    assert chart["messageType"] == "chart" and chart["metadata"]["chartId"] == chart_output["chartId"]
    assert {"chartType", "chartData", "sources"} <= set(chart["metadata"])
    png = await http.get(chart_output["imageUrl"], headers=auth())
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = await http.get(f"/api/charts/{chart_output['chartId']}.svg", headers=auth())
    assert svg.status_code == 200 and svg.text.lstrip().startswith("<svg")
    for call in detail["toolCalls"]:
        assert call["success"] is True and call["toolInput"] and call["toolOutput"]
        assert call["latencyMs"] is not None


def test_tool_command_runs_a_tool_as_a_user_and_lists_schemas(database, data_dir):
    env = {"DATABASE_URL": database.owner_url, "CHATBRANCH_DATA_DIR": str(data_dir),
           "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([sys.executable, "-m", "app.cli", "tool", "--list"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    names = {t["name"] for t in json.loads(listed.stdout)}
    assert names == {"rag_search", "database_query", "create_chart"}
    ran = subprocess.run([sys.executable, "-m", "app.cli", "tool", "database_query", "--as",
                          "csm@other.example", "--input",
                          json.dumps({"query": "SELECT name FROM customers_v ORDER BY name"})],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    names = [row[0] for row in json.loads(ran.stdout)["output"]["rows"]]
    assert names and "Acme Analytics" not in names  # Other's customers only
    refused = subprocess.run([sys.executable, "-m", "app.cli", "tool", "database_query", "--as",
                              "csm@demo.example", "--input",
                              json.dumps({"query": "DELETE FROM customers"})],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "error" in json.loads(refused.stdout)
