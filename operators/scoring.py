"""The product brief's fraud rules and amount categories.

Rule weights and thresholds come from settings; the defaults are the
serverless transaction system's: amount > 5,000 +30, merchant name holding
test/fake/dummy +40, currency outside USD/EUR/GBP +20, amount a multiple of
1,000 +10; >= 50 FRAUD_SUSPECTED, >= 30 REVIEW_REQUIRED, else APPROVED.
"""

from __future__ import annotations

from config.settings import EnrichmentSettings, FraudRules

FRAUD_SUSPECTED = "FRAUD_SUSPECTED"
REVIEW_REQUIRED = "REVIEW_REQUIRED"
APPROVED = "APPROVED"

HIGH_VALUE = "high_value"
MEDIUM_VALUE = "medium_value"
STANDARD = "standard"

_MERCHANT_CACHE_LIMIT = 100_000


class FraudScorer:
    """Rule settings, the cached merchant-word check and the score -> status map.

    The rules themselves are applied inline in the parse loop
    (``operators/parse.py``), where a function call per event would cost a
    visible share of the per-event budget. An absent field matches no rule,
    and an amount of 0 is not a "round amount" (the rule is about
    suspiciously round payments).
    """

    __slots__ = (
        "_rules",
        "currencies",
        "merchant_hits",
        "high_value",
        "medium_value",
        "review_score",
        "suspected_score",
    )

    def __init__(self, rules: FraudRules, enrichment: EnrichmentSettings) -> None:
        self._rules = rules
        self.currencies = frozenset(rules.currencies)
        self.merchant_hits: dict[str, bool] = {}
        self.high_value = enrichment.high_value_amount
        self.medium_value = enrichment.medium_value_amount
        self.review_score = rules.review_score
        self.suspected_score = rules.suspected_score

    def merchant_is_suspicious(self, name: str) -> bool:
        hit = self.merchant_hits.get(name)
        if hit is None:
            lowered = name.lower()
            hit = any(word in lowered for word in self._rules.merchant_words)
            if len(self.merchant_hits) >= _MERCHANT_CACHE_LIMIT:
                self.merchant_hits.clear()
            self.merchant_hits[name] = hit
        return hit

    def status(self, score: int) -> str:
        if score >= self._rules.suspected_score:
            return FRAUD_SUSPECTED
        if score >= self._rules.review_score:
            return REVIEW_REQUIRED
        return APPROVED
