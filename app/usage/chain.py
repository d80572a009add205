"""Verify the usage ledger's per-tenant hash chain and name the first broken row.

The digest is the database's own `usage_ledger_row_hash`, the function the insert trigger uses,
so the writer and the verifier cannot disagree about what a row hashes to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Per tenant, in chain order: each row's recomputed digest and its predecessor's seq and hash.
_FIRST_BREAKS = text("""
WITH chain AS (
  SELECT l.tenant_id, l.id, l.chain_seq, l.prev_hash, l.row_hash,
         usage_ledger_row_hash(l.prev_hash, l) AS recomputed,
         lag(l.id) OVER w AS previous_id,
         lag(l.chain_seq) OVER w AS previous_seq,
         lag(l.row_hash) OVER w AS previous_hash
  FROM usage_ledger l
  WHERE CAST(:tenant_id AS uuid) IS NULL OR l.tenant_id = CAST(:tenant_id AS uuid)
  WINDOW w AS (PARTITION BY l.tenant_id ORDER BY l.chain_seq)
), checked AS (
  SELECT *, CASE
      WHEN chain_seq IS DISTINCT FROM COALESCE(previous_seq, 0) + 1 THEN 'gap'
      WHEN prev_hash IS DISTINCT FROM COALESCE(previous_hash, '') THEN 'link'
      WHEN row_hash IS DISTINCT FROM recomputed THEN 'hash'
    END AS kind
  FROM chain
)
SELECT DISTINCT ON (tenant_id) tenant_id, id, chain_seq, kind, previous_id, previous_seq
FROM checked WHERE kind IS NOT NULL
ORDER BY tenant_id, chain_seq
""")

_HEADS = text("""
SELECT t.id AS tenant_id, t.slug, count(l.id) AS rows,
       (SELECT h.chain_seq FROM usage_ledger h WHERE h.tenant_id = t.id
        ORDER BY h.chain_seq DESC LIMIT 1) AS head_seq,
       (SELECT h.row_hash FROM usage_ledger h WHERE h.tenant_id = t.id
        ORDER BY h.chain_seq DESC LIMIT 1) AS head_hash
FROM tenants t LEFT JOIN usage_ledger l ON l.tenant_id = t.id
WHERE CAST(:tenant_id AS uuid) IS NULL OR t.id = CAST(:tenant_id AS uuid)
GROUP BY t.id, t.slug ORDER BY t.slug
""")


@dataclass(frozen=True)
class ChainBreak:
    """The first row of a tenant's chain that does not verify, and why."""

    row_id: uuid.UUID
    chain_seq: int
    kind: str  # gap | link | hash
    previous_id: uuid.UUID | None
    previous_seq: int | None

    @property
    def reason(self) -> str:
        """A sentence saying what is wrong with the row."""
        if self.kind == "gap":
            expected = (self.previous_seq or 0) + 1
            missing = self.chain_seq - expected
            return (f"gap: chain_seq {self.chain_seq} follows {self.previous_seq or 0}"
                    f" ({missing} row(s) from #{expected} are missing or were renumbered)")
        if self.kind == "link":
            return (f"link broken: prev_hash is not the hash of #{self.previous_seq}"
                    f" (row {self.previous_id}), which was rewritten")
        return "hash mismatch: the row's content is not what was chained when it was written"


@dataclass(frozen=True)
class TenantChain:
    """One tenant's chain: its length, its head (record it to detect a cut tail) and any break."""

    tenant_id: uuid.UUID
    slug: str
    rows: int
    head_seq: int | None
    head_hash: str | None
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """True when every row verifies."""
        return self.broken is None


async def find_tenant(conn: AsyncConnection, tenant: str) -> uuid.UUID | None:
    """A tenant id from its slug or id."""
    found = await conn.execute(
        text("SELECT id FROM tenants WHERE slug = :s OR CAST(id AS text) = :s"), {"s": tenant})
    return found.scalar_one_or_none()


async def verify_chains(conn: AsyncConnection,
                        tenant_id: uuid.UUID | None = None) -> list[TenantChain]:
    """Recompute every tenant's chain (or one tenant's); run as the owner, who sees all rows."""
    params = {"tenant_id": str(tenant_id) if tenant_id else None}
    breaks = {row.tenant_id: ChainBreak(row.id, row.chain_seq, row.kind, row.previous_id,
                                        row.previous_seq)
              for row in (await conn.execute(_FIRST_BREAKS, params)).all()}
    return [
        TenantChain(tenant_id=row.tenant_id, slug=row.slug, rows=row.rows, head_seq=row.head_seq,
                    head_hash=row.head_hash, broken=breaks.get(row.tenant_id))
        for row in (await conn.execute(_HEADS, params)).all()
    ]
