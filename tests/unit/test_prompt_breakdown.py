"""Prompt breakdown: segment estimates scaled exactly to the provider's reported input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.usage.breakdown import SEGMENTS, scale_to_reported


def test_scaled_segments_sum_exactly_to_the_reported_total():
    estimates = {"system": 120, "context": 300, "history": 80, "question": 12, "tools": 0}
    scaled = scale_to_reported(estimates, 1000)
    assert sum(scaled.values()) == 1000
    assert scaled["context"] > scaled["system"] > scaled["history"] > scaled["question"]
    assert scaled["tools"] == 0


def test_nothing_reported_means_nothing_attributed():
    assert set(scale_to_reported({"system": 5}, 0).values()) == {0}
    assert scale_to_reported({"system": 0, "history": 0}, 50) == {"system": 0, "history": 0}


@given(st.dictionaries(st.sampled_from(SEGMENTS), st.integers(0, 50_000), min_size=1),
       st.integers(1, 500_000))
def test_scaling_is_exact_and_never_negative(estimates, reported):
    scaled = scale_to_reported(estimates, reported)
    assert set(scaled) == set(estimates)
    assert all(v >= 0 for v in scaled.values())
    if sum(estimates.values()) > 0:
        assert sum(scaled.values()) == reported
