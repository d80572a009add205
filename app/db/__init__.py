"""Database access: engines, tenant-scoped sessions and the embedded PostgreSQL."""
