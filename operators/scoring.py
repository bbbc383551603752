"""The product brief's fraud rules and amount categories.

Rule weights and thresholds come from settings; the defaults are the
serverless transaction system's: amount > 5,000 +30, merchant name holding
test/fake/dummy +40, currency outside USD/EUR/GBP +20, amount a multiple of
1,000 +10; >= 50 FRAUD_SUSPECTED, >= 30 REVIEW_REQUIRED, else APPROVED. With a
merchant table (``reference.merchants``): an inactive merchant +50, an amount
above the merchant's limit +30, a merchant the table does not hold +0.

:meth:`FraudScorer.score` is the reference: plain and readable. The parse
step (``operators/parse.py``) applies the same rules as numpy expressions over
a chunk's columns, because a function call per event is a visible share of
its per-event budget; ``tests/rules/test_scoring.py`` checks with hypothesis
that both give the same score and category for any event.
"""

from __future__ import annotations

import math
from typing import Optional

from config.settings import EnrichmentSettings, FraudRules
from operators.reference.merchants import INACTIVE, NOT_LOADED, UNKNOWN

FRAUD_SUSPECTED = "FRAUD_SUSPECTED"
REVIEW_REQUIRED = "REVIEW_REQUIRED"
APPROVED = "APPROVED"

HIGH_VALUE = "high_value"
MEDIUM_VALUE = "medium_value"
STANDARD = "standard"

#: Category names by index, as the parse step computes them (0 high, 1 medium, 2 standard).
CATEGORIES = (HIGH_VALUE, MEDIUM_VALUE, STANDARD)

_MERCHANT_CACHE_LIMIT = 100_000


class FraudScorer:
    """Scores one event by the configured rules and names its category.

    Also holds what the parse step's column copy of the rules reads (the currency set,
    the merchant-verdict cache, the thresholds). An absent field matches no
    rule, and an amount of 0 is not a "round amount" (the rule is about
    suspiciously round payments).
    """

    __slots__ = (
        "rules",
        "currencies",
        "merchant_hits",
        "high_value",
        "medium_value",
        "review_score",
        "suspected_score",
    )

    def __init__(self, rules: FraudRules, enrichment: EnrichmentSettings) -> None:
        self.rules = rules
        self.currencies = frozenset(rules.currencies)
        self.merchant_hits: dict[str, bool] = {}
        self.high_value = enrichment.high_value_amount
        self.medium_value = enrichment.medium_value_amount
        self.review_score = rules.review_score
        self.suspected_score = rules.suspected_score

    def score(
        self,
        amount: Optional[float],
        currency: Optional[str],
        merchant_name: Optional[str],
        merchant_status: int = NOT_LOADED,
        merchant_limit: float = math.inf,
    ) -> int:
        """The fraud score of a valid event (the reference the parse step is tested against).

        :arg merchant_status: the merchant table's verdict (``operators/merchants.py``).
        :arg merchant_limit: the merchant's max_transaction_amount (``inf``: none).
        """
        rules = self.rules
        score = 0
        if merchant_status == INACTIVE:
            score += rules.inactive_merchant_points
        elif merchant_status == UNKNOWN:
            score += rules.unknown_merchant_points
        if amount is not None and amount > merchant_limit:
            score += rules.over_limit_points
        if amount is not None and amount > rules.high_amount:
            score += rules.high_amount_points
        if amount is not None and amount > 0 and amount % rules.round_amount == 0:
            score += rules.round_amount_points
        if currency is not None and currency.upper() not in self.currencies and currency not in self.currencies:
            score += rules.currency_points
        if merchant_name and self.merchant_is_suspicious(merchant_name):
            score += rules.merchant_points
        return score

    def category(self, amount: Optional[float]) -> str:
        """high_value / medium_value / standard by amount; an event without one is standard."""
        if amount is None or amount < self.medium_value:
            return STANDARD
        return HIGH_VALUE if amount >= self.high_value else MEDIUM_VALUE

    def merchant_is_suspicious(self, name: str) -> bool:
        """Whether the merchant name holds one of the configured words, any case (cached)."""
        hit = self.merchant_hits.get(name)
        if hit is None:
            hit = self.merchant_words_in(name)
            if len(self.merchant_hits) >= _MERCHANT_CACHE_LIMIT:
                self.merchant_hits.clear()
            self.merchant_hits[name] = hit
        return hit

    def merchant_words_in(self, name: str) -> bool:
        """Whether the merchant name holds one of the configured words, any case (not cached)."""
        lowered = name.lower()
        return any(word in lowered for word in self.rules.merchant_words)

    def status(self, score: int) -> str:
        """FRAUD_SUSPECTED / REVIEW_REQUIRED / APPROVED for a score."""
        if score >= self.suspected_score:
            return FRAUD_SUSPECTED
        if score >= self.review_score:
            return REVIEW_REQUIRED
        return APPROVED
