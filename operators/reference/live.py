"""The reference data in force in one process: rules, their version, merchants.

Fraud and operations teams change thresholds and merchant states while the
flow runs (docs/configuration.md, "Live rules and merchants"). A loader in
connectors/reference/ reads the rules file and the merchant table in a
background thread and publishes an immutable :class:`LiveReference` here;
the operators read :attr:`ReferenceHolder.current` once per chunk or batch,
so a chunk is judged by one version from its first event to its last, and
the swap is one attribute assignment (atomic under the GIL). The operators
get plain data and do no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from config.live_rules import rules_version
from config.settings import RuleSettings
from operators.reference.merchants import NOT_CONFIGURED, MerchantTable


@dataclass(frozen=True, slots=True)
class LiveReference:
    """One version of the reference data.

    :ivar rules: the rules in force (settings' rules with the rules file layered over).
    :ivar version: :func:`~config.live_rules.rules_version` of ``rules``; every
        alert and transaction record carries it as ``rules_version``.
    :ivar merchants: the merchant table (:data:`~operators.reference.merchants.NOT_CONFIGURED`
        when ``reference.merchants.path`` is null).
    :ivar variants: per merchant slot, the status code (bits 0-1) and 4 when
        the table's name holds one of ``rules.fraud.merchant_words`` (judged
        once per version, in the loader's thread): what the parse loop needs
        of a merchant, gathered per chunk in one call.
    """

    rules: RuleSettings
    version: str
    merchants: MerchantTable
    variants: np.ndarray

    @classmethod
    def of(
        cls, rules: RuleSettings, merchants: MerchantTable = NOT_CONFIGURED, previous: Optional[LiveReference] = None
    ) -> LiveReference:
        """A version of ``rules`` and ``merchants``; the name verdicts of ``previous`` are
        reused when neither its table nor its merchant words changed."""
        words = rules.fraud.merchant_words
        if previous is not None and previous.merchants is merchants and previous.rules.fraud.merchant_words == words:
            variants = previous.variants
        else:
            variants = merchants.status | (merchants.suspicious_names(words) << 2)
        return cls(rules, rules_version(rules), merchants, variants)


class ReferenceHolder:
    """The current :class:`LiveReference` of this process, replaced whole on reload."""

    __slots__ = ("current",)

    def __init__(self, initial: LiveReference) -> None:
        self.current = initial

    def publish(self, reference: LiveReference) -> None:
        self.current = reference
