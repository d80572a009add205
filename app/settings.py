"""One typed settings object, read once from the environment (CHATBRANCH_* and standard names)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; tests build their own instance instead of reading the environment."""

    model_config = SettingsConfigDict(env_prefix="CHATBRANCH_", extra="ignore")

    # Database: with no URL the service runs an embedded PostgreSQL in data_dir.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "CHATBRANCH_DATABASE_URL")
    )
    app_database_url: str | None = None
    app_db_password: str | None = None
    data_dir: Path = Path(".chatbranch")
    pool_size: int = 10
    pool_overflow: int = 10
    statement_timeout_ms: int = 15_000

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: list[str] = Field(default_factory=list)
    dev_mode: bool = True

    # Auth: HS256 with a secret (generated into data_dir when unset) or RS256 via a JWKS URL.
    jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_audience: str | None = None
    token_ttl_hours: int = 12

    # LLM providers and defaults (branch -> workflow -> tenant -> these).
    default_model: str = "local"
    default_temperature: float = 0.7
    default_max_tokens: int = 2000
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "CHATBRANCH_OPENAI_API_KEY")
    )
    openai_base_url: str | None = None
    anthropic_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CHATBRANCH_ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = None
    provider_connect_timeout_s: float = 5.0
    provider_read_timeout_s: float = 60.0
    provider_total_timeout_s: float = 300.0
    provider_max_retries: int = 2
    local_token_delay_ms: float = 15.0

    # Knowledge search: "auto" (local model when installed, else lexical), "local", "openai",
    # or "lexical".
    embedder: str = "auto"

    # Replies: tool loop caps, history budget, durability.
    max_tool_rounds: int = 4
    max_tool_calls: int = 8
    max_tool_output_chars: int = 20_000
    history_token_budget: int = 12_000
    analysis_timeout_s: float = 120.0
    run_flush_interval_s: float = 0.02
    run_stale_after_s: float = 30.0

    @property
    def embedded(self) -> bool:
        """True when the service manages its own PostgreSQL."""
        return not self.database_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
