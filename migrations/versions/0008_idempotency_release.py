"""Let the service release an Idempotency-Key whose action failed, so a retry can act.

Without DELETE the release itself failed: the client saw 500 instead of the action's own error,
and the key stayed claimed with no response, so every retry waited and then got 409.

Revision ID: 0008_idempotency_release
Revises: 0007_usage_hourly
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0008_idempotency_release"
down_revision = "0007_usage_hourly"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # RLS (tenant_isolation, all commands) keeps the delete to the caller's own tenant's keys.
    execute_script("GRANT DELETE ON idempotency_keys TO chatbranch_app;")


def downgrade() -> None:
    execute_script("REVOKE DELETE ON idempotency_keys FROM chatbranch_app;")
