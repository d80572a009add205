"""A flush is planned once per connection and rewrites a run's indexes twice a second at most.

Under streaming load `flush_run_events` runs a hundred or more times a second, each call between
tokens and their readers. Two costs in it did nothing for them:
- PL/pgSQL chose custom plans for its statement whenever a flush carried a few parts (the common
  case), planning it again on every call: about 0.25 ms of a 0.45 ms flush. The generic plan is
  as good at every size measured (1 to 40 runs), so the function now always uses it.
- Every call stamped `heartbeat_at` on each run it carried. That column is indexed (the
  unfinished-runs index), so each stamp was a non-HOT update writing all three indexes of
  `thread_runs`. Now a heartbeat under half a second old is kept, and the update (of
  `last_event_seq` alone) can be HOT. Half a second, not one: an idle run beats about once a
  second (`due_for_flush`), and each of those beats must still stamp, or a run could look
  twice as old as it is to a short stale-run limit (the crash test uses 2 s). A heartbeat of
  '-infinity' (a run its worker gave up, `RunManager._end_now`) is kept too, so a flush still
  in flight cannot revive a run waiting for recovery.
Everything else is 0015's.

Revision ID: 0018_flush_plans_once
Revises: 0017_recovery_says_why
Create Date: 2026-11-27
"""

from app.db.migrate import earlier_constant, execute_script, with_edits

revision = "0018_flush_plans_once"
down_revision = "0017_recovery_says_why"
branch_labels = None
depends_on = None

_EDITS = (
    ("SET search_path = pg_catalog, public, pg_temp AS $$",
     "SET search_path = pg_catalog, public, pg_temp\n"
     "SET plan_cache_mode = force_generic_plan AS $$"),
    ("UPDATE thread_runs t SET heartbeat_at = now(),",
     "UPDATE thread_runs t SET heartbeat_at = CASE\n"
     "                             WHEN t.heartbeat_at > now() - interval '0.5 second'\n"
     "                               OR t.heartbeat_at = '-infinity'\n"
     "                             THEN t.heartbeat_at ELSE now() END,"),
)


# 0015's function with a generic plan and a heartbeat stamped twice a second at most.
FUNCTION = with_edits(earlier_constant(__file__, "0015_flush_beats_in_id_order.py"), _EDITS)


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(earlier_constant(__file__, "0015_flush_beats_in_id_order.py"))
