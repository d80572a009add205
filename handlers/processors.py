"""Step processors that turn an LLM reply into analysis values (``code:Processors.*``)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from handlers.types import ProcessorResult

# Replies are model output of bounded size; scanning further only costs time.
MAX_SCANNED_CHARS = 20_000
MAX_JSON_ATTEMPTS = 25
MAX_RECOMMENDATION_CHARS = 1_000

OUTCOMES = ("renewed", "at_risk", "churned", "pending")

# Negated renewal phrases are matched (and removed) first so "not renew" never counts as "renew".
_NEGATIVE_RISK = re.compile(
    r"\b(?:will not renew|won't renew|not renew(?:ing)?|churn\w*|cancel\w*|competitor\w*|"
    r"budget cuts?|unhappy|frustrat\w*|escalat\w*|unresponsive|no response|delay\w*|"
    r"downgrad\w*|at risk|concern\w*)\b"
)
_POSITIVE_RISK = re.compile(
    r"\b(?:signed|renew(?:ed|al confirmed)?|happy|satisfied|expan\w*|committed|approved|"
    r"on track|champion)\b"
)
# Labelled values in prose replies: "Risk score: 72/100", "**Outcome:** at risk (confidence 80%)".
_LABELLED_RISK_SCORE = re.compile(r"\brisk[ _-]?score\b[^0-9\n]{0,20}?(\d{1,3}(?:\.\d+)?)", re.I)
_LABELLED_RECOMMENDATION = re.compile(r"\brecommendation\b[\s*:_-]{1,10}([^\n]+)", re.I)
_LABELLED_OUTCOME = re.compile(
    r"\boutcome\b[^a-z\n]{0,20}(renewed|at[ _-]risk|churned|pending)\b", re.I
)
_LABELLED_CONFIDENCE = re.compile(
    r"\bconfidence\b[^0-9\n]{0,20}?(\d{1,3}(?:\.\d+)?|\.\d+)\s*(%?)", re.I
)
_OUTCOME_SIGNALS: dict[str, re.Pattern[str]] = {
    "churned": re.compile(
        r"\b(?:churned|cancell?ed|terminated|will not renew|won't renew|not renewing|"
        r"lost to (?:a )?competitor|closed lost)\b"
    ),
    "renewed": re.compile(
        r"\b(?:renewed|(?<!not )(?<!not yet )signed|closed won|contract executed|po received|"
        r"renewal confirmed)\b"
    ),
    "at_risk": re.compile(
        r"\b(?:at risk|concern\w*|delay\w*|budget|competitor\w*|escalat\w*|unresponsive|"
        r"pushback|hesita\w*|downgrad\w*)\b"
    ),
}


class Processors:
    """Stateless processors; each reads a reply and the template context and returns values."""

    @staticmethod
    def riskAssessment(reply_text: str, template_context: dict[str, Any]) -> ProcessorResult:
        """Score risk 0-100 from a JSON object or labelled line in the reply, else heuristically."""
        reported = _find_json_object(reply_text, required_key="riskScore") or {}
        heuristic_score, heuristic_factors = _heuristic_risk(reply_text, template_context)
        score = _as_finite_number(reported.get("riskScore"))
        if score is None:
            score = _as_finite_number(_labelled(_LABELLED_RISK_SCORE, reply_text))
        source = "reply" if score is not None else "heuristic"
        risk_score = _clamp_int(score if score is not None else heuristic_score, 0, 100)
        recommendation = reported.get("recommendation")
        if not isinstance(recommendation, str) or not recommendation.strip():
            recommendation = _labelled(_LABELLED_RECOMMENDATION, reply_text)
        if not recommendation or not recommendation.strip("*_ "):
            recommendation = _recommend(risk_score)
        reported_factors = _text_list(reported.get("riskDrivers", reported.get("riskFactors")))
        return {
            "riskScore": risk_score,
            "riskLevel": _risk_level(risk_score),
            "recommendation": recommendation.strip("*_ ")[:MAX_RECOMMENDATION_CHARS],
            "riskFactors": reported_factors or heuristic_factors,
            "source": source,
        }

    @staticmethod
    def outcomeClassifier(reply_text: str, template_context: dict[str, Any]) -> ProcessorResult:
        """Classify the outcome (renewed, at_risk, churned, pending) with a 0-1 confidence."""
        reported = _find_json_object(reply_text, required_key="outcome") or {}
        outcome = _as_outcome(reported.get("outcome"))
        confidence = _as_finite_number(reported.get("confidence"))
        if outcome is None:
            outcome = _as_outcome(_labelled(_LABELLED_OUTCOME, reply_text))
            confidence = _labelled_confidence(reply_text)
        if outcome is not None:
            return {
                "outcome": outcome,
                "confidence": _clamp_float(confidence if confidence is not None else 0.5),
                "signals": [],
                "source": "reply",
            }
        return _heuristic_outcome(reply_text, template_context)


def _heuristic_outcome(reply_text: str, template_context: dict[str, Any]) -> ProcessorResult:
    """Classify from outcome keywords, falling back on whether the renewal date has passed."""
    text = _scanned(reply_text)
    hits = {name: pattern.findall(text) for name, pattern in _OUTCOME_SIGNALS.items()}
    # Strongest evidence first: an explicit loss or win outranks mere concern.
    for outcome in ("churned", "renewed", "at_risk"):
        if hits[outcome]:
            competing = sum(len(found) for name, found in hits.items() if name != outcome)
            confidence = 0.5 + 0.15 * len(hits[outcome]) - 0.1 * competing
            return {
                "outcome": outcome,
                "confidence": _clamp_float(confidence, low=0.2, high=0.9),
                "signals": sorted(set(hits[outcome])),
                "source": "heuristic",
            }
    days = _as_finite_number(_context_value(template_context, "workflow", "daysUntilRenewal"))
    if days is not None and days < 0:
        # Past the renewal date with no word of a signature is itself a risk signal.
        return {
            "outcome": "at_risk",
            "confidence": 0.4,
            "signals": ["overdue"],
            "source": "heuristic",
        }
    return {"outcome": "pending", "confidence": 0.3, "signals": [], "source": "heuristic"}


def _labelled(pattern: re.Pattern[str], reply_text: str) -> str | None:
    """Return the first capture of a labelled value ("Risk score: 72") in the reply, or None."""
    if not isinstance(reply_text, str):
        return None
    match = pattern.search(reply_text[:MAX_SCANNED_CHARS])
    return match.group(1) if match else None


def _labelled_confidence(reply_text: str) -> float | None:
    """Return a labelled confidence as a 0-1 fraction; "80%" and a bare "80" both mean 0.8."""
    if not isinstance(reply_text, str):
        return None
    match = _LABELLED_CONFIDENCE.search(reply_text[:MAX_SCANNED_CHARS])
    value = _as_finite_number(match.group(1)) if match else None
    if value is None:
        return None
    return value / 100 if match and (match.group(2) or value > 1) else value


def _as_outcome(value: Any) -> str | None:
    """Normalise "At risk"/"at-risk" spellings to a known outcome, else None."""
    if not isinstance(value, str):
        return None
    normalised = re.sub(r"[\s-]+", "_", value.strip().lower())
    return normalised if normalised in OUTCOMES else None


def _text_list(value: Any) -> list[str]:
    """Return up to ten non-empty strings from a reported list, each cut to a sane length."""
    if not isinstance(value, list):
        return []
    return [item.strip()[:200] for item in value if isinstance(item, str) and item.strip()][:10]


def _scanned(reply_text: str) -> str:
    """Return the lower-cased prefix of the reply that the heuristics look at."""
    return reply_text[:MAX_SCANNED_CHARS].lower() if isinstance(reply_text, str) else ""


def _find_json_object(reply_text: str, required_key: str) -> dict[str, Any] | None:
    """Return the first JSON object in the reply (fenced or inline) holding ``required_key``."""
    if not isinstance(reply_text, str):
        return None
    text = reply_text[:MAX_SCANNED_CHARS]
    decoder = json.JSONDecoder()
    start = text.find("{")
    attempts = 0
    while start != -1 and attempts < MAX_JSON_ATTEMPTS:
        attempts += 1
        try:
            value, _end = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict) and required_key in value:
            return value
        start = text.find("{", start + 1)
    return None


def _heuristic_risk(reply_text: str, template_context: dict[str, Any]) -> tuple[int, list[str]]:
    """Score risk from reply keywords plus time left and ARR at stake; return score and factors."""
    text = _scanned(reply_text)
    negative = _NEGATIVE_RISK.findall(text)
    positive = _POSITIVE_RISK.findall(_NEGATIVE_RISK.sub(" ", text))
    score = 30 + 12 * len(negative) - 8 * len(positive)
    factors = [f"mentions '{word}'" for word in sorted(set(negative))]
    days = _as_finite_number(_context_value(template_context, "workflow", "daysUntilRenewal"))
    if days is not None:
        if days < 0:
            score += 30
            factors.append("renewal date has passed")
        elif days <= 7:
            score += 20
            factors.append("renewal within 7 days")
        elif days <= 14:
            score += 10
            factors.append("renewal within 14 days")
        elif days > 60:
            score -= 5
    arr = _as_finite_number(_context_value(template_context, "workflow", "renewalARR"))
    if arr is None:
        arr = _as_finite_number(_context_value(template_context, "customer", "arr"))
    if arr is not None and arr >= 250_000:
        score += 10
        factors.append("high-value renewal (ARR >= 250k)")
    elif arr is not None and arr >= 100_000:
        score += 5
        factors.append("significant renewal (ARR >= 100k)")
    return _clamp_int(score, 0, 100), factors


def _context_value(template_context: dict[str, Any], section: str, key: str) -> Any:
    """Return ``template_context[section][key]`` or None when either level is missing."""
    container = template_context.get(section) if isinstance(template_context, dict) else None
    return container.get(key) if isinstance(container, dict) else None


def _as_finite_number(value: Any) -> float | None:
    """Return value as a finite float when it is a number or numeric text, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _clamp_int(value: float, low: int, high: int) -> int:
    """Round and clamp a score into [low, high]."""
    return max(low, min(high, round(value)))


def _clamp_float(value: float, low: float = 0.0, high: float = 1.0) -> float:
    """Clamp a confidence into [low, high], rounded to two places for stable JSON."""
    return round(max(low, min(high, value)), 2)


def _risk_level(risk_score: int) -> str:
    """Name the band a score falls in."""
    if risk_score >= 70:
        return "high"
    if risk_score >= 40:
        return "medium"
    return "low"


def _recommend(risk_score: int) -> str:
    """Give the default next move for a risk band when the reply recommended nothing."""
    if risk_score >= 70:
        return "Escalate now and agree a recovery plan with the account team."
    if risk_score >= 40:
        return "Confirm the decision maker and timeline this week."
    return "Proceed with the standard renewal motion."
