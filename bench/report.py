"""The run's results as JSON and as a Markdown table (also placed in README.md between markers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
ROOT = Path(__file__).resolve().parents[1]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: dict[str, Any]) -> str:
    """The table of all rows, with the machine and the run's conditions above it."""
    machine = results["machine"]
    peer = results["peer"]
    if peer.get("available"):
        took = peer.get("install_seconds") or peer.get("first_install_seconds")
        peer_text = (f"LiteLLM {peer.get('version') or '?'} (`litellm[proxy]`, own virtualenv "
                     f"{peer.get('size_mib')} MiB, installed in {took} s)")
    else:
        peer_text = f"LiteLLM unavailable: {peer.get('reason')}"
    lines = [
        f"Run {results['started_at']} ({'smoke' if results['smoke'] else 'full'}, "
        f"{results['elapsed_s']:.0f} s) on {machine['nproc']} x {machine['cpu']}, "
        f"{machine['memory']} RAM, Linux {machine['kernel']}; {results['pinning']}. "
        f"Peer: {peer_text}. Figures are medians/quantiles of interleaved blocks "
        "(A B A B) in one run; \"added\" means minus the same quantile straight to the mock.",
        "",
        "| # | measure | chatbranch | floor (bare Litestar + `openai`) | peer (LiteLLM proxy) "
        "| target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(results["rows"], key=lambda r: r["row"]):
        cells = row.get("cells", {})
        lines.append("| " + " | ".join(_escape(str(part)) for part in (
            row["row"], row["title"], cells.get("service", "—"), cells.get("floor", "—"),
            cells.get("peer", "—"), row["target"], _verdict(row.get("met")))) + " |")
    if results.get("notes"):
        lines += ["", *[f"- {note}" for note in results["notes"]]]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`<timestamp>.json` and `<timestamp>.md` in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("-", "")
    json_path = out_dir / f"{stamp}.json"
    md_path = out_dir / f"{stamp}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def update_readme(table: str, readme: Path = ROOT / "README.md") -> bool:
    """Replace the text between the bench markers of README.md; False when they are absent."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")
    return True
