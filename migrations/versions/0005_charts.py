"""Charts created by the create_chart tool.

Revision ID: 0005_charts
Revises: 0004_knowledge_search
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0005_charts"
down_revision = "0004_knowledge_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("SELECT 1;")


def downgrade() -> None:
    execute_script("SELECT 1;")
