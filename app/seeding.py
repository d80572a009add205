"""Load seeds/ into the database in one transaction; running it again changes nothing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts.models import Tenant, User
from app.customers.models import AccountTeamMember, Contract, Customer
from app.workflows.models import ChatBranch, SavedAction, Workflow
from app.workflows.validation import validate_workflow

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


class SeedError(ValueError):
    """The seed files are invalid; nothing was written."""


@dataclass
class SeedReport:
    """How many rows each part of the seed inserted or changed."""

    changed: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, count: int) -> None:
        """Count changed rows under `name`."""
        self.changed[name] = self.changed.get(name, 0) + count

    @property
    def total(self) -> int:
        """All rows inserted or changed."""
        return sum(self.changed.values())


@dataclass
class SeedData:
    """The parsed seed files."""

    workflows: list[dict[str, Any]]
    saved_actions: list[dict[str, Any]]
    branches: list[dict[str, Any]]
    tenants: list[dict[str, Any]]
    documents: list[dict[str, Any]]


def load_seed_files(root: Path = SEEDS_DIR) -> SeedData:
    """Read and validate every seed file; raises SeedError before anything is written."""
    workflows = [json.loads(p.read_text()) for p in sorted((root / "workflows").glob("*.json"))]
    saved_actions = json.loads((root / "saved_actions.json").read_text())
    branches = json.loads((root / "chat_branches.json").read_text())
    tenants = json.loads((root / "demo" / "tenants.json").read_text())
    saved_ids = {a["actionId"] for a in saved_actions}
    problems = []
    for config in workflows:
        own = [b for b in branches if b.get("workflowId") == config.get("id")]
        report = validate_workflow(
            config, branches=own, saved_action_ids=saved_ids, source=str(config.get("id"))
        )
        problems += [
            f"{config.get('id')}: {c.name}: {'; '.join(c.errors)}"
            for c in report.checks
            if not c.passed
        ]
    if problems:
        raise SeedError("invalid seed workflows:\n" + "\n".join(problems))
    documents = [parse_document(p) for p in sorted((root / "knowledge").glob("*.md"))]
    return SeedData(workflows, saved_actions, branches, tenants, documents)


def parse_document(path: Path) -> dict[str, Any]:
    """A knowledge Markdown file: `key: value` front matter, then the body."""
    raw = path.read_text()
    match = FRONT_MATTER.match(raw)
    meta: dict[str, str] = {}
    if match:
        for line in match.group(1).splitlines():
            key, _, value = line.partition(":")
            if key.strip():
                meta[key.strip()] = value.strip()
        raw = raw[match.end() :]
    return {
        "title": meta.get("title", path.stem),
        "source": meta.get("source", path.name),
        "tenant": meta.get("tenant", "demo"),
        "customer": meta.get("customer") or None,
        "content": raw.strip(),
    }


async def _upsert(
    conn: AsyncConnection,
    table: Any,
    rows: list[dict[str, Any]],
    conflict: dict[str, Any],
    update: list[str],
    returning: str = "id",
) -> list[Any]:
    """Insert rows; on conflict update only when a listed column really differs."""
    if not rows:
        return []
    insert_rows = insert(table).values(rows)
    changed = None
    for col in update:
        cond = table.c[col].is_distinct_from(insert_rows.excluded[col])
        changed = cond if changed is None else changed | cond
    upsert = insert_rows.on_conflict_do_update(
        **conflict, set_={c: insert_rows.excluded[c] for c in update}, where=changed
    ).returning(table.c[returning])
    return list((await conn.execute(upsert)).scalars())


async def seed(conn: AsyncConnection, data: SeedData, today: date | None = None) -> SeedReport:
    """Upsert all seed data (as the schema owner); the caller owns the transaction."""
    today = today or datetime.now(UTC).date()
    report = SeedReport()
    await _seed_core(conn, data, report)
    for tenant in data.tenants:
        await _seed_tenant(conn, tenant, data.documents, today, report)
    return report


async def _seed_core(conn: AsyncConnection, data: SeedData, report: SeedReport) -> None:
    rows = [
        {
            "workflow_id": c["id"],
            "name": c["name"],
            "description": c.get("description"),
            "version": str(c.get("version", "1.0.0")),
            "config": c,
            "is_core": True,
            "tenant_id": None,
        }
        for c in data.workflows
    ]
    report.add(
        "workflows",
        len(
            await _upsert(
                conn,
                Workflow.__table__,
                rows,
                {"constraint": "workflows_workflow_id_key"},
                ["name", "description", "version", "config"],
            )
        ),
    )
    rows = [
        {
            "action_id": a["actionId"],
            "action_name": a["actionName"],
            "action_type": a["actionType"],
            "handler": a.get("handler"),
            "config": a.get("config"),
            "available_globally": a.get("availableGlobally", True),
        }
        for a in data.saved_actions
    ]
    report.add(
        "saved_actions",
        len(
            await _upsert(
                conn,
                SavedAction.__table__,
                rows,
                {"index_elements": ["action_id"]},
                ["action_name", "action_type", "handler", "config", "available_globally"],
            )
        ),
    )
    rows = [
        {
            "workflow_id": b["workflowId"],
            "from_step_id": b["fromStepId"],
            "branch_id": b["branchId"],
            "branch_label": b["branchLabel"],
            "branch_type": b["branchType"],
            "user_prompts": b.get("userPrompts") or [],
            "response_text": b.get("responseText"),
            "next_step_id": b.get("nextStepId"),
            "saved_action_id": b.get("savedActionId"),
            "llm_handler": b.get("llmHandler"),
            "allow_off_script": bool(b.get("allowOffScript")),
            "return_to_step": b.get("returnToStep"),
            "tenant_id": None,
            "llm_config": b.get("llmConfig") or {},
        }
        for b in data.branches
    ]
    report.add(
        "chat_branches",
        len(
            await _upsert(
                conn,
                ChatBranch.__table__,
                rows,
                {"constraint": "workflow_chat_branches_branch_key"},
                [
                    "branch_label",
                    "branch_type",
                    "user_prompts",
                    "response_text",
                    "next_step_id",
                    "saved_action_id",
                    "llm_handler",
                    "allow_off_script",
                    "return_to_step",
                    "llm_config",
                ],
            )
        ),
    )


async def _seed_tenant(
    conn: AsyncConnection,
    tenant: dict[str, Any],
    documents: list[dict[str, Any]],
    today: date,
    report: SeedReport,
) -> None:
    changed = await _upsert(
        conn,
        Tenant.__table__,
        [{"slug": tenant["slug"], "name": tenant["name"], "company": tenant.get("company", {})}],
        {"index_elements": ["slug"]},
        ["name", "company"],
    )
    report.add("tenants", len(changed))
    tenant_id = (
        await conn.execute(text("SELECT id FROM tenants WHERE slug = :s"), {"s": tenant["slug"]})
    ).scalar_one()
    users = [
        {
            "tenant_id": tenant_id,
            "email": u["email"],
            "name": u.get("name", u["email"]),
            "role": u["role"],
            "manager_email": u.get("manager"),
        }
        for u in tenant["users"]
    ]
    report.add(
        "users",
        len(
            await _upsert(
                conn,
                User.__table__,
                users,
                {"index_elements": ["email"]},
                ["tenant_id", "name", "role", "manager_email"],
            )
        ),
    )
    user_ids: dict[str, Any] = dict(
        (
            await conn.execute(
                text("SELECT email, id FROM users WHERE tenant_id = :t"), {"t": tenant_id}
            )
        ).all()
    )
    for c in tenant["customers"]:
        # Dates are placed relative to the first seeding and then left alone, so a re-run on a
        # later day changes nothing (`chatbranch seed --refresh-dates` moves them again).
        row = {
            "tenant_id": tenant_id,
            "external_key": c["key"],
            "name": c["name"],
            "arr": c["arr"],
            "renewal_date": today + timedelta(days=c["renewalInDays"]),
            "has_account_plan": c.get("hasAccountPlan", False),
            "industry": c.get("industry"),
            "health_score": c.get("healthScore"),
            "csm_id": user_ids.get(c.get("csmEmail")),
        }
        report.add(
            "customers",
            len(
                await _upsert(
                    conn,
                    Customer.__table__,
                    [row],
                    {"index_elements": ["tenant_id", "external_key"]},
                    ["name", "arr", "has_account_plan", "industry", "health_score", "csm_id"],
                )
            ),
        )
        customer_id = (
            await conn.execute(
                text("SELECT id FROM customers WHERE tenant_id = :t AND external_key = :k"),
                {"t": tenant_id, "k": c["key"]},
            )
        ).scalar_one()
        contracts = [
            {
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "contract_number": k["contractNumber"],
                "plan": k.get("plan"),
                "seats": k.get("seats"),
                "arr": k["arr"],
                "start_date": today + timedelta(days=k["startInDays"]),
                "end_date": today + timedelta(days=k["endInDays"]),
                "status": k.get("status", "active"),
                "auto_renew": k.get("autoRenew", False),
            }
            for k in c.get("contracts", [])
        ]
        report.add(
            "contracts",
            len(
                await _upsert(
                    conn,
                    Contract.__table__,
                    contracts,
                    {"index_elements": ["tenant_id", "contract_number"]},
                    ["plan", "seats", "arr", "status", "auto_renew"],
                )
            ),
        )
        team = [
            {
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "role": m["role"],
                "name": m["name"],
                "email": m["email"],
            }
            for m in c.get("accountTeam", [])
        ]
        report.add(
            "account_teams",
            len(
                await _upsert(
                    conn,
                    AccountTeamMember.__table__,
                    team,
                    {"index_elements": ["customer_id", "role", "email"]},
                    ["name"],
                )
            ),
        )
    await _seed_documents(conn, tenant, tenant_id, documents, report)


async def _seed_documents(
    conn: AsyncConnection,
    tenant: dict[str, Any],
    tenant_id: Any,
    documents: list[dict[str, Any]],
    report: SeedReport,
) -> None:
    # Imported here: the knowledge slice pulls in the embedders, which seeding alone needs.
    from app.knowledge.embedders import default_embedder
    from app.knowledge.service import ingest_document

    embedder = default_embedder()
    for doc in (d for d in documents if d["tenant"] == tenant["slug"]):
        customer_id = None
        if doc["customer"]:
            customer_id = (
                await conn.execute(
                    text("SELECT id FROM customers WHERE tenant_id = :t AND external_key = :k"),
                    {"t": tenant_id, "k": doc["customer"]},
                )
            ).scalar_one_or_none()
            if customer_id is None:
                raise SeedError(f"document {doc['source']}: unknown customer {doc['customer']}")
        # Chunked and embedded like any ingested document; the same content again (and the
        # same embedder) writes nothing, so re-seeding stays a no-op.
        result = await ingest_document(
            conn,
            embedder,
            tenant_id=tenant_id,
            customer_id=customer_id,
            title=doc["title"],
            source=doc["source"],
            content=doc["content"],
        )
        if result.created:
            report.add("knowledge_documents", 1)
        if result.embedded:
            report.add("knowledge_chunks", result.embedded)


async def refresh_dates(conn: AsyncConnection, data: SeedData, today: date) -> int:
    """Move seeded customers' renewal and contract dates back to their offsets from today."""
    moved = 0
    for tenant in data.tenants:
        for c in tenant["customers"]:
            result = await conn.execute(
                text(
                    "UPDATE customers SET renewal_date = :d WHERE external_key = :k AND tenant_id ="
                    " (SELECT id FROM tenants WHERE slug = :s) AND renewal_date <> :d"
                ),
                {
                    "d": today + timedelta(days=c["renewalInDays"]),
                    "k": c["key"],
                    "s": tenant["slug"],
                },
            )
            moved += result.rowcount or 0
            for k in c.get("contracts", []):
                result = await conn.execute(
                    text(
                        "UPDATE contracts SET start_date = :a, end_date = :b"
                        " WHERE contract_number = :n"
                        " AND tenant_id = (SELECT id FROM tenants WHERE slug = :s)"
                        " AND (start_date, end_date) IS DISTINCT FROM (:a, :b)"
                    ),
                    {
                        "a": today + timedelta(days=k["startInDays"]),
                        "b": today + timedelta(days=k["endInDays"]),
                        "n": k["contractNumber"],
                        "s": tenant["slug"],
                    },
                )
                moved += result.rowcount or 0
    return moved
