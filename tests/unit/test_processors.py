"""Processors: parse JSON verdicts from replies, fall back to heuristics, keep values in range."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import Processors
from handlers.processors import OUTCOMES


def context(days: float | None = 30, arr: float | None = 50_000) -> dict[str, Any]:
    return {
        "customer": {"name": "Acme Corp", "arr": arr},
        "workflow": {"daysUntilRenewal": days, "renewalARR": arr},
    }


def test_risk_assessment_reads_a_json_verdict_in_the_reply() -> None:
    reply = 'My assessment: {"riskScore": 80, "recommendation": "Call the CFO today"} Thanks.'
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["riskScore"] == 80
    assert analysis["recommendation"] == "Call the CFO today"
    assert analysis["riskLevel"] == "high"
    assert analysis["source"] == "reply"


def test_risk_assessment_reads_json_inside_a_code_fence_after_other_braces() -> None:
    reply = 'Template {{customer.name}} aside:\n```json\n{"riskScore": 35}\n```'
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["riskScore"] == 35
    assert analysis["riskLevel"] == "low"
    assert analysis["recommendation"]


def test_risk_assessment_reads_labelled_values_in_a_prose_reply() -> None:
    reply = (
        "Summary of the account.\n**Risk score:** 72/100\n"
        "**Recommendation:** Book an executive sponsor call this week.\n"
    )
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["riskScore"] == 72
    assert analysis["recommendation"] == "Book an executive sponsor call this week."
    assert analysis["source"] == "reply"


def test_reported_risk_drivers_become_the_risk_factors() -> None:
    reply = '{"riskScore": 60, "riskDrivers": ["No exec sponsor", "Open P1 ticket", 7]}'
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["riskFactors"] == ["No exec sponsor", "Open P1 ticket"]


@pytest.mark.parametrize(
    ("reported", "expected"), [(150, 100), (-20, 0), (72.6, 73), ("65", 65), (1e300, 100)]
)
def test_risk_score_from_the_reply_is_clamped_to_a_whole_percentage(
    reported: object, expected: int
) -> None:
    reply = f'{{"riskScore": {reported!r}}}'.replace("'", '"')
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["riskScore"] == expected
    assert isinstance(analysis["riskScore"], int)


@pytest.mark.parametrize(
    "reply", ['{"riskScore": "very high"}', '{"riskScore": null}', '{"risk": 90}', "no json here"]
)
def test_unusable_json_falls_back_to_the_heuristic(reply: str) -> None:
    analysis = Processors.riskAssessment(reply, context())
    assert analysis["source"] == "heuristic"


def test_negative_signals_raise_the_heuristic_score() -> None:
    calm = Processors.riskAssessment("Call went fine.", context())["riskScore"]
    worried = Processors.riskAssessment(
        "They mentioned a competitor and budget cuts; the champion is unresponsive.", context()
    )
    assert worried["riskScore"] > calm
    assert any("competitor" in factor for factor in worried["riskFactors"])


def test_negated_renewal_counts_as_risk_not_reassurance() -> None:
    will = Processors.riskAssessment("The customer will renew.", context())["riskScore"]
    will_not = Processors.riskAssessment("The customer will not renew.", context())["riskScore"]
    assert will_not > will


def test_fewer_days_left_and_more_arr_raise_the_heuristic_score() -> None:
    reply = "Status unchanged."
    far = Processors.riskAssessment(reply, context(days=90))["riskScore"]
    near = Processors.riskAssessment(reply, context(days=5))["riskScore"]
    overdue = Processors.riskAssessment(reply, context(days=-3))["riskScore"]
    assert far < near < overdue
    small = Processors.riskAssessment(reply, context(arr=20_000))["riskScore"]
    large = Processors.riskAssessment(reply, context(arr=400_000))["riskScore"]
    assert large > small


def test_heuristic_tolerates_a_sparse_context() -> None:
    analysis = Processors.riskAssessment("Nothing new.", {})
    assert 0 <= analysis["riskScore"] <= 100
    assert analysis["source"] == "heuristic"


@given(
    reply=st.text(max_size=300),
    days=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-1000, 1000)),
    arr=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(0, 10**9)),
)
def test_risk_score_is_always_a_whole_number_from_0_to_100(
    reply: str, days: float | None, arr: float | None
) -> None:
    analysis = Processors.riskAssessment(reply, context(days=days, arr=arr))
    assert isinstance(analysis["riskScore"], int)
    assert 0 <= analysis["riskScore"] <= 100


def test_outcome_classifier_reads_a_json_verdict() -> None:
    reply = 'Verdict: {"outcome": "renewed", "confidence": 0.95}'
    result = Processors.outcomeClassifier(reply, context())
    assert result == {"outcome": "renewed", "confidence": 0.95, "signals": [], "source": "reply"}


@pytest.mark.parametrize(("reported", "expected"), [(1.7, 1.0), (-0.3, 0.0), ("0.4", 0.4)])
def test_outcome_confidence_from_the_reply_is_clamped(reported: object, expected: float) -> None:
    reply = f'{{"outcome": "churned", "confidence": {reported!r}}}'.replace("'", '"')
    assert Processors.outcomeClassifier(reply, context())["confidence"] == expected


@pytest.mark.parametrize(
    ("reply", "outcome", "confidence"),
    [
        ("**Outcome:** at risk (confidence: 80%)", "at_risk", 0.8),
        ("Outcome - Churned. Confidence 0.9", "churned", 0.9),
        ('{"outcome": "At-Risk", "confidence": 0.35}', "at_risk", 0.35),
        ("Outcome: pending", "pending", 0.5),
    ],
)
def test_outcome_classifier_reads_labelled_and_loosely_spelled_outcomes(
    reply: str, outcome: str, confidence: float
) -> None:
    result = Processors.outcomeClassifier(reply, context())
    assert (result["outcome"], result["confidence"], result["source"]) == (
        outcome,
        confidence,
        "reply",
    )


def test_outcome_outside_the_known_set_falls_back_to_the_heuristic() -> None:
    result = Processors.outcomeClassifier('{"outcome": "won"} Contract signed.', context())
    assert result["source"] == "heuristic"
    assert result["outcome"] == "renewed"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Great news: the contract was signed yesterday.", "renewed"),
        ("They told us they will not renew this year.", "churned"),
        ("Budget concerns and procurement delays again.", "at_risk"),
        ("Had a call; following up next week.", "pending"),
        ("The order form is not yet signed; following up.", "pending"),
    ],
)
def test_outcome_heuristic_recognises_signals(reply: str, expected: str) -> None:
    result = Processors.outcomeClassifier(reply, context())
    assert result["outcome"] == expected
    assert result["source"] == "heuristic"


def test_overdue_renewal_without_signals_is_at_risk() -> None:
    result = Processors.outcomeClassifier("Had a call; following up next week.", context(days=-10))
    assert result["outcome"] == "at_risk"
    assert "overdue" in result["signals"]


@given(reply=st.text(max_size=300))
def test_outcome_is_known_and_confidence_is_between_0_and_1(reply: str) -> None:
    result = Processors.outcomeClassifier(reply, context())
    assert result["outcome"] in OUTCOMES
    assert 0.0 <= result["confidence"] <= 1.0
