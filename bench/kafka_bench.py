"""Sources benchmark: the whole flow reading Kafka next to a bare consumer, and Kinesis on moto.

    .venv/bin/python -m bench.kafka_bench [--events 200000] [--partitions 4] [--kinesis-events 20000]
        [--rounds 2] [--max-batch-size N] [--skip-kinesis]

Starts its own Tansu broker and moto_server (tests/support/servers.py), publishes
simulator traffic, then measures in the same run:

- bare: one kafka-python consumer (assign + seek, no group) reading every
  partition to its end, decoding nothing: the ceiling for our source;
- source: :class:`KafkaSource` and :class:`ConfluentKafkaSource` partitions
  drained in one thread, no flow;
- pipeline: ``python -m bytewax.run dataflow`` in bounded Kafka mode with
  the JSONL sinks (scored transactions, per-minute metrics), wall clock
  from process start to exit 0, and the same minus the start-up of a run
  on a topic holding one event per partition (not an empty one: a fetch
  from an empty partition waits ``fetch_max_wait_ms`` for data, which
  would inflate the start-up subtracted); its per-minute counts are checked against counts
  computed directly from the published events; then the same as two
  processes (``-i/-a``), each reading half of the partitions;
- file: the same events through the same pipeline from a JSONL file (no
  Kafka), minus its own start-up: what the flow costs without a source.
  Reading and processing share one thread in a process, so one process
  from Kafka can reach at most 1 / (1/bare + 1/file) events/s; the table
  prints that bound as a share of the bare consumer next to the measured
  share;
- kinesis: :class:`KinesisSource` and the bounded pipeline against moto.

The whole-process runs (file; Kafka with each client, one process and two)
are repeated ``--rounds`` times, interleaved so that a change in the shared
machine's load hits every shape alike; each shape's best round counts, and
the ratios to the file run are also printed per round. ``--max-batch-size``
sets ``source.max_batch_size`` for every run (``--max-batch-size 1000``:
fixed chunks of ``batch_size``, to measure what growing chunks buy).

Prints a Markdown table (the figures in docs/performance.md come from it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_k, _v)

import orjson  # noqa: E402
import yaml  # noqa: E402

from cli.producer import publish_kafka, publish_kinesis  # noqa: E402
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings  # noqa: E402
from connectors.kafka.confluent_source import ConfluentKafkaSource  # noqa: E402
from connectors.kafka.source import KafkaSource  # noqa: E402
from connectors.kinesis.source import KinesisSource  # noqa: E402
from tests.support.events import simulated  # noqa: E402
from tests.support.servers import free_port, start_moto, start_tansu  # noqa: E402


def _events(n: int) -> list[tuple[str, bytes]]:
    return simulated(n, 1200)


def _expected_minutes(events: list[tuple[str, bytes]]) -> Counter:
    counts: Counter = Counter()
    for _, payload in events:
        ev = orjson.loads(payload)
        counts[(ev["region"], ev["timestamp"][:16])] += 1
    return counts


def _bare_consumer(brokers: str, topic: str, partitions: int, n: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=1000,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 << 20,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    start, got = time.perf_counter(), 0
    while got < n:
        got += sum(len(v) for v in consumer.poll(timeout_ms=100, max_records=1000).values())
    elapsed = time.perf_counter() - start
    consumer.close()
    return n / elapsed


def _drain_source(source, n: int) -> float:
    start, got = time.perf_counter(), 0
    parts = [source.build_part("bench", name, None) for name in source.list_parts()]
    live = list(parts)
    while live:
        for part in list(live):
            try:
                got += sum(len(c.lines) for c in part.next_batch())
            except StopIteration:
                live.remove(part)
    elapsed = time.perf_counter() - start
    for part in parts:
        part.close()
    assert got == n, f"source read {got} of {n}"
    return n / elapsed


#: ``source.max_batch_size`` for every whole-process run (None: the settings' default).
MAX_BATCH_SIZE: int | None = None
#: CPU seconds (user + system, all its processes) of every whole-process run, by run name.
CPU_SECONDS: dict[str, float] = {}


def _pipeline(tmp: Path, name: str, source: dict, env: dict | None = None, processes: int = 1) -> tuple[float, Path]:
    """Wall seconds of ``bytewax.run dataflow`` as ``processes`` processes (``-i/-a``).

    Their CPU seconds go to :data:`CPU_SECONDS`: CPU per event moves less than
    wall clock with the shared machine's load, and tells what a second
    process costs in work (state and batches crossing between processes).
    """
    out = tmp / name
    sizes = {"batch_size": 1000} | ({"max_batch_size": MAX_BATCH_SIZE} if MAX_BATCH_SIZE else {})
    cfg = {
        "source": {**sizes, **source},
        "sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}, "jsonl": {"dir": str(out)}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    cluster = [["-i", str(i), "-a", addresses] for i in range(processes)] if processes > 1 else [[]]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflow", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {}), "PAYWATCH_CONFIG": str(path)},
            stdout=subprocess.DEVNULL,
        )
        for args in cluster
    ]
    cpu = 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            raise SystemExit(f"pipeline {name} failed with {proc.returncode}")
    CPU_SECONDS[name] = cpu
    return time.perf_counter() - start, out


def _check_minutes(out: Path, expected: Counter) -> None:
    got: Counter = Counter()
    for f in out.glob("metrics-*.jsonl"):
        for line in f.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec.get("region") in {r for r, _ in expected}:
                got[(rec["region"], rec["window_start"][:16])] += rec["count"]
    assert got == expected, (
        f"per-minute counts differ: {sorted((got - expected).items())[:5]} {sorted((expected - got).items())[:5]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kinesis-events", type=int, default=20_000)
    parser.add_argument("--kinesis-shards", type=int, default=2)
    parser.add_argument("--skip-kinesis", action="store_true", help="measure Kafka only")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the whole-process runs")
    parser.add_argument("--max-batch-size", type=int, default=None, help="source.max_batch_size of every run")
    args = parser.parse_args()
    global MAX_BATCH_SIZE
    MAX_BATCH_SIZE = args.max_batch_size

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    tmp = Path(tempfile.mkdtemp(prefix="paywatch-bench-"))
    rows: list[tuple[str, str]] = []
    broker = start_tansu(tmp)
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.address)
        topic, tiny = f"bench-{uuid.uuid4().hex[:8]}", f"tiny-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, args.partitions, 1), NewTopic(tiny, args.partitions, 1)])
        admin.close()
        events = _events(args.events)
        expected = _expected_minutes(events)
        settings = KafkaSourceSettings(brokers=[broker.address], topic=topic, bounded=True)
        publish_kafka(settings, events, linger_ms=5)
        producer = KafkaProducer(bootstrap_servers=broker.address)
        for partition in range(args.partitions):
            producer.send(tiny, events[partition][1], partition=partition)
        producer.close()

        bare = _bare_consumer(broker.address, topic, args.partitions, args.events)
        most = args.max_batch_size or 20_000
        source = _drain_source(KafkaSource(settings, 1000, 30, max_batch_size=most), args.events)
        source_rd = _drain_source(ConfluentKafkaSource(settings, 1000, 30, max_batch_size=most), args.events)
        kafka = {"brokers": [broker.address], "topic": topic, "bounded": True}
        rdkafka = {**kafka, "client": "confluent-kafka"}
        events_file, empty_file = tmp / "events.jsonl", tmp / "empty.jsonl"
        events_file.write_bytes(b"".join(payload + b"\n" for _, payload in events))
        empty_file.write_bytes(b"")
        shapes = {
            "file": ({"type": "file", "path": str(events_file)}, 1),
            "kafka": ({"type": "kafka", "kafka": kafka}, 1),
            "rdkafka": ({"type": "kafka", "kafka": rdkafka}, 1),
            "kafka-2": ({"type": "kafka", "kafka": kafka}, 2),
            "rdkafka-2": ({"type": "kafka", "kafka": rdkafka}, 2),
        }
        walls: dict[str, list[float]] = {name: [] for name in shapes}
        for round_no in range(args.rounds):
            for name, (src, processes) in shapes.items():
                wall_s, out = _pipeline(tmp, f"{name}-{round_no}", src, processes=processes)
                _check_minutes(out, expected)
                walls[name].append(wall_s)
        startup, _ = _pipeline(tmp, "kafka-tiny", {"type": "kafka", "kafka": {**kafka, "topic": tiny}})
        startup2, _ = _pipeline(tmp, "kafka-tiny-2", {"type": "kafka", "kafka": {**kafka, "topic": tiny}}, processes=2)
        startup_rd, _ = _pipeline(tmp, "rdkafka-tiny", {"type": "kafka", "kafka": {**rdkafka, "topic": tiny}})
        startup_rd2, _ = _pipeline(
            tmp, "rdkafka-tiny-2", {"type": "kafka", "kafka": {**rdkafka, "topic": tiny}}, processes=2
        )
        startup_file, _ = _pipeline(tmp, "file-empty", {"type": "file", "path": str(empty_file)})
        best = {name: min(w) for name, w in walls.items()}
        wall, wall2, wall_file, wall_rdkafka, wall_rd2 = (
            best[k] for k in ("kafka", "kafka-2", "file", "rdkafka", "rdkafka-2")
        )

        def per_round(name: str) -> str:
            return ", ".join(f"{f / k:.2f}" for f, k in zip(walls["file"], walls[name], strict=True))

        def net_of(wall_s: float, start_s: float) -> float:
            return args.events / max(wall_s - start_s, 1e-9)

        def per_cpu(name: str, tiny_run: str) -> float:
            """Events per CPU-second of the shape's leanest round, net of its start-up's CPU."""
            cpu = min(CPU_SECONDS[f"{name}-{r}"] for r in range(args.rounds))
            return args.events / max(cpu - CPU_SECONDS[tiny_run], 1e-9)

        cpu1, cpu2 = per_cpu("kafka", "kafka-tiny"), per_cpu("kafka-2", "kafka-tiny-2")
        cpu_rd1, cpu_rd2 = per_cpu("rdkafka", "rdkafka-tiny"), per_cpu("rdkafka-2", "rdkafka-tiny-2")
        cpu_file = per_cpu("file", "file-empty")

        net, net2 = net_of(wall, startup), net_of(wall2, startup2)
        net_rd, net_rd2 = net_of(wall_rdkafka, startup_rd), net_of(wall_rd2, startup_rd2)
        net_file = net_of(wall_file, startup_file)
        bound = 1 / (1 / bare + 1 / net_file)
        rows += [
            (f"bare kafka-python consumer, {args.partitions} partitions", f"{bare:,.0f}"),
            ("KafkaSource alone (no flow), kafka-python", f"{source:,.0f}"),
            ("KafkaSource alone (no flow), confluent-kafka", f"{source_rd:,.0f}"),
            ("pipeline from Kafka, kafka-python, wall clock incl. start-up", f"{args.events / wall:,.0f}"),
            (
                f"pipeline from Kafka, kafka-python, minus start-up ({startup:.2f} s)",
                f"{net:,.0f} ({net / bare:.0%} of bare)",
            ),
            (
                f"pipeline from Kafka, kafka-python, 2 processes, minus start-up ({startup2:.2f} s)",
                f"{net2:,.0f} ({net2 / bare:.0%} of bare; **{net2 / net:.2f}x** one process)",
            ),
            (f"pipeline from Kafka, confluent-kafka, minus start-up ({startup_rd:.2f} s)", f"{net_rd:,.0f}"),
            (
                f"pipeline from Kafka, confluent-kafka, 2 processes, minus start-up ({startup_rd2:.2f} s)",
                f"{net_rd2:,.0f} (**{net_rd2 / net_rd:.2f}x** one process)",
            ),
            (
                f"pipeline from a file, same events, 1 process, minus start-up ({startup_file:.2f} s)",
                f"{net_file:,.0f}",
            ),
            (
                "2 processes / 1 process, wall clock incl. start-up: kafka-python / confluent-kafka",
                f"{wall / wall2:.2f}x / {wall_rdkafka / wall_rd2:.2f}x",
            ),
            (
                "events per CPU-second net of start-up: file / kafka-python / confluent-kafka, 1 process",
                f"{cpu_file:,.0f} / {cpu1:,.0f} / {cpu_rd1:,.0f}",
            ),
            (
                "the same, 2 processes: kafka-python / confluent-kafka (ceiling of 2 processes on 2 free cores)",
                f"{cpu2:,.0f} ({2 * cpu2 / cpu1:.2f}x) / {cpu_rd2:,.0f} ({2 * cpu_rd2 / cpu_rd1:.2f}x)",
            ),
            ("one-process bound from Kafka, 1/(1/bare + 1/file)", f"{bound:,.0f} ({bound / bare:.0%} of bare)"),
            ("whole process from a file, start-up included", f"{args.events / wall_file:,.0f}"),
            (
                "whole process from Kafka, kafka-python, start-up included",
                f"{args.events / wall:,.0f} (**{wall_file / wall:.2f}** of the file run; rounds {per_round('kafka')})",
            ),
            (
                "whole process from Kafka, confluent-kafka, start-up included",
                f"{args.events / wall_rdkafka:,.0f} (**{wall_file / wall_rdkafka:.2f}** of the file run;"
                f" rounds {per_round('rdkafka')})",
            ),
        ]
    finally:
        broker.stop()

    if args.skip_kinesis:
        _print(rows)
        return 0
    moto = start_moto(tmp)
    try:
        import boto3

        client = boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")
        stream = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_stream(StreamName=stream, ShardCount=args.kinesis_shards)
        client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
        events = _events(args.kinesis_events)
        aws = AwsSettings(endpoint_url=moto.url)
        kin = {
            "stream_name": stream,
            "bounded": True,
            "min_poll_interval_seconds": 0.0,
            "idle_poll_interval_seconds": 0.05,
        }
        start = time.perf_counter()
        publish_kinesis(KinesisSourceSettings(**kin), aws, events, client=client)
        put_rate = len(events) / (time.perf_counter() - start)
        source = _drain_source(KinesisSource(KinesisSourceSettings(**kin), aws, 10_000, 30), len(events))
        wall, out = _pipeline(
            tmp, "kinesis", {"type": "kinesis", "kinesis": kin}, env={"PAYWATCH__AWS__ENDPOINT_URL": moto.url}
        )
        _check_minutes(out, _expected_minutes(events))
        rows += [
            (f"producer PutRecords to moto, {args.kinesis_shards} shards", f"{put_rate:,.0f}"),
            ("KinesisSource alone against moto", f"{source:,.0f}"),
            ("pipeline from Kinesis (moto), wall clock", f"{len(events) / wall:,.0f}"),
        ]
    finally:
        moto.stop()

    _print(rows, args.kinesis_events)
    return 0


def _print(rows: list[tuple[str, str]], kinesis_events: int = 0) -> None:
    print(
        f"kinesis events: {kinesis_events:,}; source.max_batch_size: {MAX_BATCH_SIZE or 'default'}; "
        "per-minute counts checked exact in every pipeline run\n"
    )
    print("| measurement | events/s |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    raise SystemExit(main())
