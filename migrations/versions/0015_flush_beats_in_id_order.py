"""A flush locks the runs it beats in id order, as a stop request does.

The flush's heartbeat UPDATE locked a worker's runs in whatever order its plan produced, while a
stop request (the ORM updating a thread's unfinished runs) locks them in primary-key order. A
thread with a running and a queued run, a stop and a flush at the same moment: each held one
run the other needed, and PostgreSQL killed one of them. The runs are now locked in id order
before the UPDATE; its result and everything else are 0014's.

Revision ID: 0015_flush_beats_in_id_order
Revises: 0014_flush_parts_in_order
Create Date: 2026-11-26
"""

from app.db.migrate import earlier_constant, execute_script, with_edits

revision = "0015_flush_beats_in_id_order"
down_revision = "0014_flush_parts_in_order"
branch_labels = None
depends_on = None

_EDITS = (
    ("(see the migration's note)", "(migration 0014)"),
    ("FROM (SELECT DISTINCT run_id FROM added) d\n  )\n",
     "FROM (SELECT DISTINCT run_id FROM added) d\n"
     "  ), locked AS (  -- after the parts, in id order: the order a stop request locks runs in\n"
     "    SELECT l.id FROM thread_runs l\n"
     "    WHERE l.id = ANY(p_beats) AND (SELECT count(*) FROM woken) >= 0\n"
     "    ORDER BY l.id FOR NO KEY UPDATE\n"
     "  )\n"),
    ("WHERE t.id = x.run AND (SELECT count(*) FROM woken) >= 0",
     "WHERE t.id = x.run AND (SELECT count(*) FROM locked) >= 0"),
)


# 0014's function with the beaten runs locked in id order before its UPDATE.
FUNCTION = with_edits(earlier_constant(__file__, "0014_flush_parts_in_order.py"), _EDITS)


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(earlier_constant(__file__, "0014_flush_parts_in_order.py"))
