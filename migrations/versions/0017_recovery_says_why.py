"""Crash recovery says why a run ended when the worker knew: a reply whose ending failed.

`recover_stale_runs` (0002) ends runs whose worker stopped heart-beating, telling readers "the
server stopped". Since session 7 a worker whose reply could not write its ending ends that run
through the same recovery at once, and its readers were told the server had stopped when it had
not. Now such a run carries its reason (`error_message`, set with the stale heartbeat) and the
recovery keeps it and says it; runs of a stopped worker read as before.

Revision ID: 0017_recovery_says_why
Revises: 0016_text_ranks_bm25
Create Date: 2026-11-27
"""

from app.db.migrate import earlier_constant, execute_script, with_edits

revision = "0017_recovery_says_why"
down_revision = "0016_text_ranks_bm25"
branch_labels = None
depends_on = None

_STOPPED = "'the worker stopped before the reply finished'"
_TOLD = "'The reply was interrupted because the server stopped. Send it again.'"
_EDITS = (
    (f"error_message = {_STOPPED}", f"error_message = COALESCE(error_message, {_STOPPED})"),
    ("RETURNING id, tenant_id, thread_id, assistant_message_id, user_id, last_event_seq",
     "RETURNING id, tenant_id, thread_id, assistant_message_id, user_id, last_event_seq,"
     " error_message"),
    (f"'errorText', {_TOLD})",
     f"'errorText', CASE WHEN r.error_message = {_STOPPED} THEN {_TOLD}"
     " ELSE 'The reply was interrupted because ' || r.error_message || '. Send it again.' END)"),
)


def _recovery(edited: bool) -> str:
    """0002's `recover_stale_runs`, as CREATE OR REPLACE, with or without the reason kept."""
    schema = earlier_constant(__file__, "0002_runs.py", "SCHEMA")
    start = schema.index("CREATE FUNCTION recover_stale_runs")
    body = schema[start:schema.index("END $$;", start) + len("END $$;")]
    body = body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    return with_edits(body, _EDITS if edited else ())


def upgrade() -> None:
    execute_script(_recovery(edited=True))


def downgrade() -> None:
    execute_script(_recovery(edited=False))
