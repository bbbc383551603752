"""Publish the simulator's traffic to Kafka or Kinesis (the brief's producer.py).

    python -m cli.producer --target kafka --scenario failure_spike --events 100000 --rate 2000

Reads the same settings as the flow (defaults.yaml, ``PAYWATCH_CONFIG``,
``PAYWATCH__...``): the Kafka brokers/topic/security of ``source.kafka``, the
stream of ``source.kinesis`` with ``aws.region``/``aws.endpoint_url``, and the
``simulator`` section for the traffic. Events are keyed by user id, so one
user's events stay in one Kafka partition / Kinesis shard, in order: the
per-user rules rely on it.

Batching: Kafka through the producer's ``linger_ms``/``batch_size``;
Kinesis through PutRecords of up to 500 records (and 5 MiB), resending only
the records a call reports as failed, with backoff.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from connectors.aws.retry import Backoff

logger = logging.getLogger(__name__)

Event = tuple[str, bytes]
_PUT_RECORDS_MAX = 500
_PUT_RECORDS_BYTES = 5 * 1024 * 1024
_PROGRESS_SECONDS = 5.0
#: Between PutRecords of the records a call reported as failed (throttled shards).
_BACKOFF = Backoff(base=0.1, cap=5.0)


def paced(events: Iterable[Event], rate: float) -> Iterator[Event]:
    """Yield ``events`` at no more than ``rate`` per second (0 = unpaced)."""
    if rate <= 0:
        yield from events
        return
    start = time.monotonic()
    for i, event in enumerate(events):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield event


def publish_kafka(
    settings: KafkaSourceSettings,
    events: Iterable[Event],
    linger_ms: int = 20,
    batch_bytes: int = 256 * 1024,
    acks: Any = 1,
) -> int:
    """Send every event to the first configured topic, keyed by user id.

    :returns: how many events the broker acknowledged.
    :raises RuntimeError: some sends failed (the count says how many).
    """
    from kafka import KafkaProducer

    from connectors.kafka.client_config import producer_config

    producer = KafkaProducer(**producer_config(settings, linger_ms=linger_ms, batch_size=batch_bytes, acks=acks))
    topic = settings.topics[0]
    failures: list[BaseException] = []
    sent = 0
    last_log = time.monotonic()
    try:
        for key, payload in events:
            producer.send(topic, key=key.encode(), value=payload).add_errback(failures.append)
            sent += 1
            if time.monotonic() - last_log >= _PROGRESS_SECONDS:
                last_log = time.monotonic()
                logger.info("kafka %s: %d events sent", topic, sent)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"kafka {topic}: {len(failures)} of {sent} events failed, first: {failures[0]!r}")
    return sent


def _put_with_retry(client: Any, stream: str, records: list[dict], attempts: int = 8) -> None:
    """PutRecords, resending only the records reported as failed."""
    for attempt in range(1, attempts + 1):
        response = client.put_records(StreamName=stream, Records=records)
        if not response.get("FailedRecordCount"):
            return
        records = [rec for rec, res in zip(records, response["Records"], strict=False) if "ErrorCode" in res]
        delay = _BACKOFF.delay(attempt)
        logger.warning(
            "kinesis %s: %d records failed (%s), retrying in %.1fs",
            stream,
            len(records),
            next(r["ErrorCode"] for r in response["Records"] if "ErrorCode" in r),
            delay,
        )
        time.sleep(delay)
    raise RuntimeError(f"kinesis {stream}: {len(records)} records still failing after {attempts} attempts")


def publish_kinesis(
    settings: KinesisSourceSettings, aws: AwsSettings, events: Iterable[Event], client: Any = None
) -> int:
    """Send every event to the stream, partition key = user id.

    :returns: how many records were written.
    :raises RuntimeError: records still failing after the retries.
    """
    if client is None:
        from connectors.aws.client import ClientProfile, make_client

        client = make_client("kinesis", aws, ClientProfile(attempts=8))
    stream = settings.stream_name
    batch: list[dict] = []
    batch_bytes = sent = 0
    last_log = time.monotonic()
    for key, payload in events:
        size = len(payload) + len(key.encode())
        if batch and (len(batch) == _PUT_RECORDS_MAX or batch_bytes + size > _PUT_RECORDS_BYTES):
            _put_with_retry(client, stream, batch)
            sent += len(batch)
            batch, batch_bytes = [], 0
            if time.monotonic() - last_log >= _PROGRESS_SECONDS:
                last_log = time.monotonic()
                logger.info("kinesis %s: %d records written", stream, sent)
        batch.append({"Data": payload, "PartitionKey": key or "-"})
        batch_bytes += size
    if batch:
        _put_with_retry(client, stream, batch)
        sent += len(batch)
    return sent


def _parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.producer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["kafka", "kinesis"], required=True)
    parser.add_argument("--config", help="settings file (default: $PAYWATCH_CONFIG)")
    parser.add_argument("--scenario", help="simulator.scenario")
    parser.add_argument("--events", type=int, help="simulator.events (0 = endless)")
    parser.add_argument("--rate", type=float, help="events per second (simulator.rate; 0 = as fast as possible)")
    parser.add_argument("--seed", type=int, help="simulator.seed")
    parser.add_argument("--linger-ms", type=int, default=20, help="Kafka producer linger (default 20)")
    parser.add_argument("--batch-bytes", type=int, default=256 * 1024, help="Kafka producer batch size")
    parser.add_argument("--acks", default="1", help="Kafka acks: 0, 1 or all (default 1)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from config.loader import load_settings
    from connectors.simulator.source import iter_events

    simulator = {
        k: v
        for k, v in {"scenario": args.scenario, "events": args.events, "rate": args.rate, "seed": args.seed}.items()
        if v is not None
    }
    settings = load_settings(args.config, overrides={"simulator": simulator} if simulator else None)
    events = paced(iter_events(settings.simulator), settings.simulator.rate)
    started = time.monotonic()
    if args.target == "kafka":
        acks = args.acks if args.acks == "all" else int(args.acks)
        sent = publish_kafka(settings.source.kafka, events, args.linger_ms, args.batch_bytes, acks)
    else:
        sent = publish_kinesis(settings.source.kinesis, settings.aws, events)
    elapsed = time.monotonic() - started
    print(f"published {sent} events to {args.target} in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
