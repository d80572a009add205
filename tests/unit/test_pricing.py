"""The versioned price book: the version in force at a call's time costs it, exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from app.usage.pricing import PRICES_FILE, PriceBook

CHANGE = datetime(2026, 3, 15, tzinfo=UTC)


@pytest.fixture
def book(tmp_path: Path) -> PriceBook:
    """Two versions: gpt-4o gets cheaper on 15 March; a mini model is priced throughout."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([
        {"version": "v-march", "effectiveFrom": "2026-03-15T00:00:00Z", "models": {
            "gpt-4o": {"input": "2.00", "cachedInput": "1.00", "output": "8.00"},
            "gpt-4o-mini": {"input": "0.15", "cachedInput": "0.075", "output": "0.60"}}},
        {"version": "v-jan", "effectiveFrom": "2026-01-01T00:00:00Z", "models": {
            "gpt-4o": {"input": "2.50", "cachedInput": "1.25", "output": "10.00"},
            "gpt-4o-mini": {"input": "0.15", "cachedInput": "0.075", "output": "0.60"}}},
    ]))
    return PriceBook.load(path)


def test_a_call_is_costed_with_the_version_in_force_at_its_time(book: PriceBook) -> None:
    before = book.cost("gpt-4o", CHANGE - timedelta(microseconds=1), 1_000_000, 0, 100_000)
    after = book.cost("gpt-4o", CHANGE, 1_000_000, 0, 100_000)
    # 1M input at $2.50 + 100k output at $10 = 3.50; from the change, $2.00 + $0.80 = 2.80.
    assert before == (Decimal("3.50000000"), "v-jan")
    assert after == (Decimal("2.80000000"), "v-march")


def test_a_call_before_the_first_version_costs_nothing_and_names_no_version(
        book: PriceBook) -> None:
    assert book.cost("gpt-4o", datetime(2025, 12, 31, 23, 59, tzinfo=UTC), 1000, 0, 1000) == (
        Decimal(0), None)


def test_cached_input_is_priced_at_its_own_rate(book: PriceBook) -> None:
    cost, _ = book.cost("gpt-4o", datetime(2026, 2, 1, tzinfo=UTC), 1_000_000, 400_000, 0)
    # 600k uncached at $2.50 + 400k cached at $1.25 = 1.50 + 0.50.
    assert cost == Decimal("2.00000000")


def test_small_calls_keep_eight_decimal_places(book: PriceBook) -> None:
    cost, _ = book.cost("gpt-4o", datetime(2026, 2, 1, tzinfo=UTC), 1234, 200, 567)
    # (1034 * 2.50 + 200 * 1.25 + 567 * 10.00) / 1e6 = 8505 / 1e6
    assert cost == Decimal("0.00850500")
    mini, _ = book.cost("gpt-4o-mini", datetime(2026, 2, 1, tzinfo=UTC), 7, 3, 1)
    # (4 * 0.15 + 3 * 0.075 + 1 * 0.60) / 1e6 = 1.425e-6, rounded to 8 places
    assert mini == Decimal("0.00000142")


@pytest.mark.parametrize(("model", "priced_as"), [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai:gpt-4o", "gpt-4o"),
    ("openai:gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
])
def test_dated_and_prefixed_model_names_use_their_base_models_price(
        book: PriceBook, model: str, priced_as: str) -> None:
    when = datetime(2026, 2, 1, tzinfo=UTC)
    assert book.cost(model, when, 10_000, 1_000, 2_000) == book.cost(
        priced_as, when, 10_000, 1_000, 2_000)


def test_an_unknown_model_costs_nothing_and_names_no_version(book: PriceBook) -> None:
    assert book.cost("claude-test-1", datetime(2026, 2, 1, tzinfo=UTC), 5000, 0, 500) == (
        Decimal(0), None)
    # A name that merely starts like a priced one is not that model.
    assert book.cost("gpt-4omega", datetime(2026, 2, 1, tzinfo=UTC), 5000, 0, 500) == (
        Decimal(0), None)


def test_the_shipped_price_file_prices_every_model_in_all_three_rates() -> None:
    raw = json.loads(PRICES_FILE.read_text())
    book = PriceBook.load()
    assert {v.version for v in book.versions} == {v["version"] for v in raw}
    starts = [v.effective_from for v in book.versions]
    assert starts == sorted(starts)
    for version in book.versions:
        for name, price in version.models.items():
            assert min(price.input, price.cached_input, price.output) >= 0, name
            assert price.cached_input <= price.input, name
