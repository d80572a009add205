"""Usage query validation, page cursors and CSV cells (no database needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.errors import BadRequest
from app.usage import service
from app.usage.schemas import UsageParams

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = 86400


def test_defaults_follow_openais_usage_api() -> None:
    query = service.parse_usage_query(UsageParams(start_time=0), now=NOW)
    assert (query.bucket_width, query.limit, query.end, query.group_by) == ("1d", 7, NOW, ())
    hourly = service.parse_usage_query(UsageParams(start_time=0, bucket_width="1h"), now=NOW)
    assert hourly.limit == 24


def test_lists_may_be_repeated_or_comma_separated() -> None:
    user = uuid.uuid4()
    query = service.parse_usage_query(UsageParams(
        start_time=0, group_by=["model,user", "model", "tool"], models=["a, b", "c"],
        user_ids=[str(user)]), now=NOW)
    assert query.group_by == ("model", "user", "tool")
    assert query.filters.models == ("a", "b", "c")
    assert query.filters.user_ids == (user,)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BadRequest) as caught:
        service.parse_usage_query(UsageParams(
            start_time=None, bucket_width="1w", group_by=["colour"], limit=0,
            thread_ids=["nope"]), now=NOW)
    assert {e["key"] for e in caught.value.errors or []} == {
        "startTime", "bucketWidth", "groupBy", "limit", "threadIds"}


def test_a_page_cursor_continues_where_the_last_page_ended() -> None:
    first = service.parse_usage_query(
        UsageParams(start_time=0, end_time=10 * DAY, limit=4), now=NOW)
    assert service.next_page(first) == str(4 * DAY)
    second = service.parse_usage_query(
        UsageParams(start_time=0, end_time=10 * DAY, limit=4, page=str(4 * DAY)), now=NOW)
    assert (second.origin, second.page_start.timestamp()) == (first.origin, 4 * DAY)
    last = service.parse_usage_query(
        UsageParams(start_time=0, end_time=10 * DAY, limit=4, page=str(8 * DAY)), now=NOW)
    assert last.page_end.timestamp() == 10 * DAY and service.next_page(last) is None


@pytest.mark.parametrize("page", ["3600", "abc", str(10 * DAY), "-86400"])
def test_a_page_cursor_off_the_bucket_grid_or_outside_the_range_is_refused(page: str) -> None:
    with pytest.raises(BadRequest) as caught:
        service.parse_usage_query(
            UsageParams(start_time=0, end_time=10 * DAY, page=page), now=NOW)
    assert [e["key"] for e in caught.value.errors or []] == ["page"]


def test_csv_cells_never_start_a_spreadsheet_formula() -> None:
    assert service._cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert service._cell("@step") == "'@step"
    assert (service._cell("gpt-4o"), service._cell(None), service._cell(-3)) == ("gpt-4o", "", -3)
