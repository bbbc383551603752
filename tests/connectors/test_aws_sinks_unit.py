"""Unit tests of the AWS sinks' pure parts and of the delivery/retry machinery (no AWS)."""

from __future__ import annotations

import logging
import math
import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from connectors.aws.retry import Backoff, classify, record_failure
from connectors.sinks.cloudwatch import FAILURE_RATE, in_range, minute_datums
from connectors.sinks.delivery import (
    BUFFER_FULL,
    PERMANENT_ERROR,
    UNDELIVERED_AT_CLOSE,
    Delivery,
    DeliveryPolicy,
    SendResult,
    SinkError,
)
from connectors.sinks.dynamodb import (
    AGGREGATES,
    TRANSACTIONS,
    attribute_value,
    dedupe_last,
    records_of,
    to_item,
)
from connectors.sinks.sns import MAX_BATCH_BYTES, alert_entry, batch_count, fifo_id, subject
from operators.alerts import FAILURE_RATE as FAILURE_RATE_ALERT
from operators.alerts import OPEN, make_alert
from operators.records import TransactionBatch


def client_error(code: str, status: int = 400, message: str = "boom") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


class ListWriter:
    """In-memory dead-letter writer."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._lock = threading.Lock()

    def write(self, records: list[dict]) -> None:
        with self._lock:
            self.records.extend(records)

    def close(self) -> None:
        return


FAST = DeliveryPolicy(backoff=Backoff(0.001, 0.005), max_buffer=1000, block_seconds=0.0, close_timeout_seconds=5.0)


# -- retry policy -----------------------------------------------------------------


def test_backoff_grows_with_jitter_and_caps():
    backoff = Backoff(base=0.1, cap=1.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        draws = [backoff.delay(attempt, rng) for _ in range(200)]
        assert min(draws) >= ceiling / 2
        assert max(draws) <= ceiling
        assert len(set(draws)) > 100  # jittered, not one fixed delay


@pytest.mark.parametrize(
    "exc, transient, code",
    [
        (client_error("Throttling"), True, "Throttling"),
        (client_error("ProvisionedThroughputExceededException"), True, "ProvisionedThroughputExceededException"),
        (client_error("SomethingNew", 503), True, "SomethingNew"),
        (client_error("SomethingNew", 429), True, "SomethingNew"),
        (client_error("ResourceNotFoundException"), False, "ResourceNotFoundException"),
        (client_error("AccessDeniedException"), False, "AccessDeniedException"),
        (client_error("KMSDisabledException", 500), False, "KMSDisabledException"),
        (client_error("SomethingNew", 400), False, "SomethingNew"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, "EndpointConnectionError"),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True, "ReadTimeoutError"),
        (ValueError("bad record"), False, "ValueError"),
    ],
)
def test_classify(exc, transient, code):
    failure = classify(exc)
    assert failure.transient is transient
    assert failure.code == code


def test_permanent_failure_names_the_fix():
    failure = classify(client_error("ResourceNotFoundException", message="Requested resource not found"))
    text = failure.describe("DynamoDB table t1", "sinks.dynamodb.alerts_table")
    assert "cli.provision up" in text and "sinks.dynamodb.alerts_table" in text
    assert "DynamoDB table t1" in text


def test_record_failure_uses_sender_fault():
    assert record_failure("InternalError", "x", False).transient
    assert not record_failure("InvalidParameter", "x", True).transient
    assert record_failure("Throttled", "x", None).transient is False
    assert record_failure("Throttling", "x", True).transient


# -- CloudWatch -------------------------------------------------------------------

MINUTE = [
    {
        "region": "US-WEST",
        "window_start": "2026-01-01T10:00:00Z",
        "window_end": "2026-01-01T10:01:00Z",
        "count": 200,
        "failures": 9,
        "failure_rate": 4.5,
        "fraud_suspected": 1,
        "review_required": 3,
    },
    {
        "region": "US-EAST",
        "window_start": "2026-01-01T10:00:00Z",
        "window_end": "2026-01-01T10:01:00Z",
        "count": 300,
        "failures": 3,
        "failure_rate": 1.0,
        "fraud_suspected": 0,
        "review_required": 1,
    },
    {
        "region": "EU-WEST",
        "window_start": "2026-01-01T10:00:00Z",
        "window_end": "2026-01-01T10:01:00Z",
        "count": 0,
        "failures": 0,
        "failure_rate": 0.0,
        "fraud_suspected": 0,
        "review_required": 0,
    },
]


def _by(datums, metric, region):
    dims = [{"Name": "Region", "Value": region}] if region else []
    found = [
        d
        for d in datums
        if d["MetricName"] == metric
        and d["Dimensions"][: len(dims) or None] == dims
        and (region or not any(x["Name"] == "Region" for x in d["Dimensions"]))
    ]
    assert len(found) <= 1
    return found[0]["Value"] if found else None


def test_minute_datums_per_region_and_total():
    datums = minute_datums(MINUTE)
    assert _by(datums, FAILURE_RATE, "US-WEST") == pytest.approx(4.5)
    assert _by(datums, FAILURE_RATE, "US-EAST") == pytest.approx(1.0)
    assert _by(datums, FAILURE_RATE, None) == pytest.approx(12 * 100 / 500)
    assert _by(datums, "TransactionCount", None) == 500
    assert _by(datums, "FailureCount", None) == 12
    assert _by(datums, "FraudSuspectedCount", None) == 1
    assert _by(datums, "ReviewRequiredCount", None) == 4
    assert _by(datums, "TransactionCount", "EU-WEST") == 0
    assert _by(datums, FAILURE_RATE, "EU-WEST") is None  # undefined without payments
    assert {d["Timestamp"] for d in datums} == {datetime(2026, 1, 1, 10, tzinfo=UTC)}
    assert all(d["Unit"] == ("Percent" if d["MetricName"] == FAILURE_RATE else "Count") for d in datums)
    assert len(datums) == 3 * 4 + 2 + 5


def test_minute_datums_extra_dimensions():
    datums = minute_datums(MINUTE[:1], "Zone", {"Environment": "prod"})
    assert {tuple(sorted((x["Name"], x["Value"]) for x in d["Dimensions"])) for d in datums} == {
        (("Environment", "prod"), ("Zone", "US-WEST")),
        (("Environment", "prod"),),
    }


def test_cloudwatch_timestamp_window():
    now = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    datum = {"Timestamp": datetime(2026, 3, 1, tzinfo=UTC) - timedelta(days=13, hours=23)}
    assert in_range(datum, now, 14)
    assert not in_range({"Timestamp": datum["Timestamp"] - timedelta(hours=2)}, now, 14)
    assert not in_range({"Timestamp": datetime(2026, 3, 1, 3, tzinfo=UTC)}, now, 14)


# -- SNS --------------------------------------------------------------------------


def _alert(**over):
    alert = make_alert(
        FAILURE_RATE_ALERT,
        OPEN,
        "US-WEST",
        "FAILURE_RATE:US-WEST:20260101T100100Z",
        1767261660.0,
        4.5,
        2.0,
        "failure rate 4.5% over 200 payments",
        region="US-WEST",
    )
    alert.update(over)
    return alert


def test_subject_is_short_ascii_and_readable():
    text = subject(_alert(type="TRAFFIC_DROP"))
    assert text == "Paywatch [CRITICAL] TRAFFIC_DROP OPEN US-WEST: 4.5 vs 2"
    long = subject(_alert(type="TRAFFIC_DROP", region="R" * 300 + "\u00e9\n"))
    assert len(long) <= 100 and long.isascii() and "\n" not in long


def test_failure_rate_subject_is_the_message_in_words():
    words = "US-EAST failure rate 8.1 % over 60 s (threshold 2 %): 88 % of failures on device=mobile, 34 % of traffic"
    text = subject(_alert(message=words, details={"window_seconds": 60}))
    assert text == "US-EAST failure rate 8.1 % (threshold 2 %): 88 % of failures on device=mobile, 34 % of traffic"
    assert subject(_alert()) == "Paywatch failure rate 4.5% over 200 payments"
    long = subject(_alert(message="x" * 300 + "\u00e9"))
    assert len(long) == 100 and long.isascii()


def test_alert_entry_attributes_and_fifo_ids():
    entry = alert_entry(_alert(), fifo=True)
    attrs = {k: v["StringValue"] for k, v in entry["MessageAttributes"].items()}
    assert attrs == {
        "alert_type": "FAILURE_RATE",
        "severity": "CRITICAL",
        "region": "US-WEST",
        "state": "OPEN",
        "alert_id": "FAILURE_RATE:US-WEST:20260101T100100Z:OPEN",
    }
    assert entry["MessageGroupId"] == "US-WEST"
    assert entry["MessageDeduplicationId"] == "FAILURE_RATE:US-WEST:20260101T100100Z:OPEN"
    assert orjson.loads(entry["Message"])["alert_id"] == attrs["alert_id"]
    plain = alert_entry(_alert(region=None), fifo=False)
    assert "MessageGroupId" not in plain and "region" not in plain["MessageAttributes"]


def test_fifo_id_limits():
    assert fifo_id("a b") == "a_b"
    long = fifo_id("x" * 200)
    assert len(long) == 64 and long != fifo_id("x" * 201)


def test_batch_count_by_entries_and_bytes():
    small = [alert_entry(_alert(), fifo=False)] * 25
    assert batch_count(small) == 10
    assert batch_count(small[:3]) == 3
    big = [alert_entry(_alert(message="m" * (MAX_BATCH_BYTES // 3)), fifo=False)] * 5
    assert batch_count(big) == 2
    huge = [alert_entry(_alert(message="m" * MAX_BATCH_BYTES), fifo=False)]
    assert batch_count(huge) == 1  # sent alone; SNS judges it


# -- DynamoDB ---------------------------------------------------------------------


def test_attribute_values_and_decimals():
    assert attribute_value(0.1) == {"N": "0.1"}
    assert Decimal(attribute_value(4.5)["N"]) == Decimal("4.5")
    assert attribute_value(1e-7) == {"N": "1E-7"}
    assert attribute_value(12) == {"N": "12"}
    assert attribute_value(True) == {"BOOL": True}
    assert attribute_value(None) == {"NULL": True}
    assert attribute_value(math.nan) == {"S": "nan"}
    assert attribute_value({"a": [1, "x", 2.5]}) == {"M": {"a": {"L": [{"N": "1"}, {"S": "x"}, {"N": "2.5"}]}}}
    assert to_item({"id": "t1"}, ("expires_at", 99)) == {"id": {"S": "t1"}, "expires_at": {"N": "99"}}


def test_dedupe_keeps_last_put_per_key():
    items = [
        to_item({"region": "A", "window_start": "w1", "count": 1}),
        to_item({"region": "B", "window_start": "w1", "count": 2}),
        to_item({"region": "A", "window_start": "w1", "count": 3}),
        to_item({"region": "A", "window_start": "w2", "count": 4}),
    ]
    kept = dedupe_last(items, ("region", "window_start"))
    assert [i["count"]["N"] for i in kept] == ["2", "3", "4"]


def test_records_of_transactions_modes():
    lines = [{"transaction_id": "t1", "amount": 10.5}, {"transaction_id": "t2", "amount": 9000.0}]
    batch = TransactionBatch(b"".join(orjson.dumps(x) + b"\n" for x in lines), 2, [lines[1]])
    assert records_of(TRANSACTIONS, batch, "all") == lines
    assert records_of(TRANSACTIONS, batch, "flagged") == [lines[1]]
    assert records_of(AGGREGATES, MINUTE) == MINUTE


# -- delivery ---------------------------------------------------------------------


def _delivery(send, writer=None, policy=FAST, take=lambda pending: 3, pending=None):
    return Delivery("test-0", send, take, writer or ListWriter(), policy, resource="R", setting="S", pending=pending)


def test_transient_errors_are_retried_in_order_without_loss():
    sent: list[int] = []
    failures = iter([EndpointConnectionError(endpoint_url="x"), client_error("Throttling"), None, None, None, None])

    def send(chunk):
        exc = next(failures, None)
        if exc is not None:
            raise exc
        sent.extend(chunk)
        return SendResult()

    delivery = _delivery(send)
    delivery.submit(list(range(10)))
    delivery.close()
    assert sent == list(range(10))
    assert delivery.stats.transient_errors == 2
    assert delivery.stats.delivered == 10


def test_per_record_retries_go_back_in_front():
    sent: list[int] = []
    unprocessed = {1}

    def send(chunk):
        retry = [u for u in chunk if u in unprocessed]
        unprocessed.clear()
        sent.extend(u for u in chunk if u not in retry)
        return SendResult(retry=retry)

    delivery = _delivery(send)
    delivery.submit(list(range(6)))
    delivery.close()
    assert sorted(sent) == list(range(6)) and len(sent) == 6
    assert delivery.stats.retried_units == 1


def test_permanent_error_dead_letters_and_logs_once(caplog):
    writer = ListWriter()

    def send(chunk):
        raise client_error("ResourceNotFoundException", message="Requested resource not found")

    delivery = _delivery(send, writer)
    with caplog.at_level(logging.ERROR, logger="connectors.sinks.delivery"):
        delivery.submit(list(range(7)))
        delivery.close()
    assert sorted(orjson.loads(r["raw"]) for r in writer.records) == list(range(7))
    assert {r["reason"] for r in writer.records} == {PERMANENT_ERROR}
    assert {r["error_code"] for r in writer.records} == {"ResourceNotFoundException"}
    assert delivery.stats.permanent_errors == 3
    logged = [r for r in caplog.records if "permanent error" in r.getMessage()]
    assert len(logged) == 1 and "provision up" in logged[0].getMessage()


def test_fail_on_error_stops_after_dead_lettering():
    writer = ListWriter()
    policy = DeliveryPolicy(
        backoff=Backoff(0.001, 0.005), max_buffer=100, block_seconds=0.0, close_timeout_seconds=5.0, fail_on_error=True
    )
    delivery = _delivery(lambda chunk: (_ for _ in ()).throw(client_error("AccessDenied")), writer, policy)
    delivery.submit([1, 2])
    delivery.flush(5.0)
    with pytest.raises(SinkError, match="AccessDenied"):
        delivery.close()
    assert sorted(orjson.loads(r["raw"]) for r in writer.records) == [1, 2]


def test_full_buffer_spills_to_dead_letters_and_close_dead_letters_the_rest():
    writer = ListWriter()
    gate = threading.Event()

    def send(chunk):
        gate.wait(5)
        raise EndpointConnectionError(endpoint_url="x")

    policy = DeliveryPolicy(backoff=Backoff(0.001, 0.005), max_buffer=5, block_seconds=0.0, close_timeout_seconds=0.2)
    delivery = _delivery(send, writer, policy)
    delivery.submit(list(range(8)))
    assert [orjson.loads(r["raw"]) for r in writer.records] == [5, 6, 7]
    assert {r["reason"] for r in writer.records} == {BUFFER_FULL}
    assert delivery.snapshot() == [0, 1, 2, 3, 4]
    gate.set()
    delivery.close()
    spilled = [orjson.loads(r["raw"]) for r in writer.records if r["reason"] == UNDELIVERED_AT_CLOSE]
    assert sorted(spilled) == [0, 1, 2, 3, 4]


def test_resume_state_is_sent_first():
    sent: list[int] = []
    delivery = _delivery(lambda chunk: (sent.extend(chunk), SendResult())[1], pending=[100, 101])
    delivery.submit([1])
    delivery.close()
    assert sent == [100, 101, 1]
