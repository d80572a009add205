"""The generated dev secret: processes starting together on a fresh folder agree on one."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from app.auth.tokens import load_secret
from app.settings import Settings


def _secret_in(folder: str) -> str:
    return load_secret(Settings(data_dir=Path(folder), jwt_secret=None))


def test_workers_starting_together_share_one_complete_secret(tmp_path: Path) -> None:
    for attempt in range(5):
        folder = tmp_path / f"fresh-{attempt}"
        with ProcessPoolExecutor(max_workers=6) as pool:
            secrets = list(pool.map(_secret_in, [str(folder)] * 12))
        assert len(set(secrets)) == 1 and len(secrets[0]) >= 48
        assert (folder / "jwt-secret").read_text() == secrets[0]
        assert [p.name for p in folder.iterdir()] == ["jwt-secret"]  # no drafts left behind
        assert (folder / "jwt-secret").stat().st_mode & 0o077 == 0
