"""Versioned prices: a call is costed with the price version in effect when it was made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

PRICES_FILE = Path(__file__).with_name("prices.json")
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million input, cached-input and output tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal


@dataclass(frozen=True)
class PriceVersion:
    """A price table and the moment from which it applies."""

    version: str
    effective_from: datetime
    models: dict[str, ModelPrice]


class PriceBook:
    """Every price version, oldest first."""

    def __init__(self, versions: list[PriceVersion]) -> None:
        self.versions = sorted(versions, key=lambda v: v.effective_from)

    @classmethod
    def load(cls, path: Path = PRICES_FILE) -> PriceBook:
        """Read a price file (a list of versions)."""
        raw = json.loads(path.read_text())
        return cls([
            PriceVersion(
                version=v["version"],
                effective_from=datetime.fromisoformat(v["effectiveFrom"].replace("Z", "+00:00")),
                models={name: ModelPrice(Decimal(p["input"]), Decimal(p["cachedInput"]),
                                         Decimal(p["output"])) for name, p in v["models"].items()},
            ) for v in raw
        ])

    def cost(self, model: str, at: datetime, input_tokens: int, cached_tokens: int,
             output_tokens: int) -> tuple[Decimal, str | None]:
        """(USD, price version) for a call; unknown models cost 0 with no version."""
        version = self._version_at(at)
        if version is None:
            return Decimal(0), None
        price = version.models.get(_base_model(model, version.models))
        if price is None:
            return Decimal(0), None
        uncached = max(0, input_tokens - cached_tokens)
        usd = (uncached * price.input + cached_tokens * price.cached_input
               + output_tokens * price.output) / MILLION
        return usd.quantize(Decimal("0.00000001")), version.version

    def _version_at(self, at: datetime) -> PriceVersion | None:
        current = None
        for version in self.versions:
            if version.effective_from <= at:
                current = version
        return current


def _base_model(model: str, known: dict[str, ModelPrice]) -> str:
    """Match dated snapshots ('gpt-4o-2024-08-06') and forced prefixes to their priced name."""
    name = model.split(":", 1)[1] if ":" in model else model
    if name in known:
        return name
    candidates = [k for k in known if name.startswith(k + "-")]
    return max(candidates, key=len) if candidates else name


@lru_cache(maxsize=1)
def default_price_book() -> PriceBook:
    """The price book shipped with the service."""
    return PriceBook.load()
