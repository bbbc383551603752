"""The parse loop's inlined rules give the reference FraudScorer's score, status and category."""

import orjson
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config import load_settings
from operators.parse import ChunkParser
from operators.scoring import APPROVED, FRAUD_SUSPECTED, REVIEW_REQUIRED, FraudScorer
from tests.support.events import T0, chunk, event, line

SETTINGS = load_settings(environ={})

amounts = st.one_of(
    st.none(),
    st.sampled_from([0, 99.99, 100, 999.99, 1000, 2000, 5000, 5000.01, 6000, 10_000.0]),
    st.integers(0, 10**9),
    st.floats(min_value=0, max_value=1e12, allow_nan=False),
)
currencies = st.one_of(st.none(), st.sampled_from(["USD", "usd", "Eur", "GBP", "JPY", "chf", "ÄÖÜ"]))
merchants = st.one_of(
    st.none(), st.sampled_from(["", "Corner Shop", "TEST shop", "a fake one", "Dummy", "tester", "Fak e"]), st.text()
)


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(amounts, currencies, merchants), min_size=1, max_size=30))
def test_the_hot_loop_scores_as_the_reference_does(fields):
    events = [
        event(f"t{i}", T0 + i, amount=amount, currency=currency, merchant=merchant)
        for i, (amount, currency, merchant) in enumerate(fields)
    ]
    _, out = ChunkParser(SETTINGS).parse(None, chunk([line(e) for e in events]))
    assert out.dead_letters == []
    scorer = FraudScorer(SETTINGS.rules.fraud, SETTINGS.enrichment)
    records = [orjson.loads(raw) for raw in out.transactions.splitlines()]
    for (amount, currency, merchant), record in zip(fields, records, strict=True):
        score = scorer.score(amount, currency, merchant)
        assert record["fraud_score"] == score
        assert record["fraud_status"] == scorer.status(score)
        assert record["category"] == scorer.category(amount)
    flagged = [r["transaction_id"] for r in records if r["fraud_status"] != APPROVED]
    assert [r["transaction_id"] for r in out.flagged] == flagged
    suspected = [r["transaction_id"] for r in records if r["fraud_status"] == FRAUD_SUSPECTED]
    assert [a["transaction_id"] for a in out.alerts] == suspected


def test_the_reference_follows_the_brief():
    scorer = FraudScorer(SETTINGS.rules.fraud, SETTINGS.enrichment)
    assert scorer.score(6000, "JPY", "Fake Store") == 30 + 10 + 20 + 40
    assert scorer.score(None, None, None) == 0
    assert scorer.score(0, "usd", "") == 0  # 0 is not a round amount; currency in any case
    assert (
        scorer.status(50) == FRAUD_SUSPECTED and scorer.status(30) == REVIEW_REQUIRED and scorer.status(29) == APPROVED
    )
    assert [scorer.category(a) for a in (None, 99.99, 100, 1000)] == [
        "standard",
        "standard",
        "medium_value",
        "high_value",
    ]
