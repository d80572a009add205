"""A flush stores each run's parts in sequence order, as a reply's ending does.

Both write the same parts (a flush takes a run's new parts while its ending stores them too), so
each waits on the other's uncommitted rows. They must take them in one order. The ending inserts
straight from its arrays, in order; the flush's insert joins its arrays to `thread_runs`, and once
that table is big enough the plan hashes the arrays and hands each run's parts back newest
first. Flush and ending then each held a part the other needed, and PostgreSQL killed one of
them; in CI it was the ending, and its reply never finished (tests/integration/test_driver.py
reproduces it).
The insert now sorts by (run, sequence number); nothing else changes.

Revision ID: 0014_flush_parts_in_order
Revises: 0013_flush_in_one_statement
Create Date: 2026-11-26
"""

from app.db.migrate import earlier_constant, execute_script, with_edits

revision = "0014_flush_parts_in_order"
down_revision = "0013_flush_in_one_statement"
branch_labels = None
depends_on = None

_RLS_LINE = "-- RLS: own runs\n"
_IN_ORDER = "    ORDER BY x.r, x.s  -- the order every writer of parts keeps (see the migration's note)\n"


def _function() -> str:
    """0013's function, as CREATE OR REPLACE (its grants stand), its insert sorted."""
    earlier = earlier_constant(__file__, "0013_flush_in_one_statement.py")
    function = earlier[:earlier.index("REVOKE ALL ON FUNCTION flush_run_events")]
    return with_edits(function, (("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
                                 (_RLS_LINE, _RLS_LINE + _IN_ORDER)))


FUNCTION = _function()


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(
        "DROP FUNCTION IF EXISTS flush_run_events(UUID, UUID[], INT[], TEXT[], UUID[], INT[]);"
        + earlier_constant(__file__, "0013_flush_in_one_statement.py"))
