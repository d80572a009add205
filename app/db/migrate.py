"""Run Alembic revisions programmatically (the `chatbranch migrate` command and the tests)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(owner_url: str) -> Config:
    """An Alembic config pointing at migrations/ and the owner's database."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["owner_url"] = owner_url
    return config


def upgrade(owner_url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision`."""
    command.upgrade(alembic_config(owner_url), revision)


def downgrade(owner_url: str, revision: str = "base") -> None:
    """Take the schema down to `revision`."""
    command.downgrade(alembic_config(owner_url), revision)


def head_revision() -> str:
    """The newest revision in migrations/."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    return head or ""


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script inside the current migration's transaction.

    asyncpg prepares every statement it is given, and a prepared statement holds one command;
    its simple-query `execute` (no arguments) takes a whole script.
    """
    from alembic import op
    from sqlalchemy.util import await_only

    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    await_only(driver_connection.execute(sql))


def with_edits(sql: str, edits: Iterable[tuple[str, str]]) -> str:
    """`sql` with each (old, new) edit made, every `old` found exactly once: a migration that
    changes an earlier function states only its change."""
    for old, new in edits:
        if sql.count(old) != 1:
            raise ValueError(f"the text to edit holds {sql.count(old)} of {old!r}, not one")
        sql = sql.replace(old, new)
    return sql


def earlier_constant(beside: str, migration: str, name: str = "FUNCTION") -> str:
    """A SQL constant of another migration file in the same folder (a downgrade restoring the
    function an upgrade replaced); `beside` is the calling migration's `__file__`."""
    import importlib.util

    path = Path(beside).with_name(migration)
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(getattr(module, name))
