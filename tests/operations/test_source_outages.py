"""Every connection to the source cut for 20 s in the middle of a run, then restored.

The flow must not exit, must resume reading where it was, and must end with
exactly the output of a run that was never cut; the lag metric must show
the outage.

- Kafka, with each client: the flow runs unbounded; the cut comes once every
  partition has read data (the flow's own lag says so), and the other half of
  the events is produced during the cut on connections the cut spares; the
  cut lasts 20 s and until all of it is in. Nothing reaches the flow while
  cut (its lag never rises); once restored, every partition's lag counts what
  was produced meanwhile, then drains back to 0. The lag is read from every
  value the flow sets (``tests.support.lag_recorder``), not from scrapes,
  which could miss a rise that librdkafka's fetches and the flow's reads
  drained between two of them. The run then ends by a kill and a bounded
  resume, as an unbounded run only can.
- Kinesis: the cut is triggered by traffic (``TcpProxy.cut_after``), after a
  given number of bytes have reached the flow, so it falls in the middle of
  a bounded read whatever the machine's speed; the lag holds, above 0, while cut.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import boto3
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner import murmur2

from cli.producer import publish_kafka, publish_kinesis
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from connectors.kafka.client_config import producer_config
from tests.operations.test_source_recovery import BAD, _config, _events
from tests.support.flow import ROOT, finish, start_flow, stderr_of
from tests.support.lag_recorder import LOG_VARIABLE, LagUpdate, read_updates
from tests.support.output import jsonl_lines
from tests.support.servers import free_port, start_tansu
from tests.support.tcp_proxy import TcpProxy

OUTAGE_SECONDS = 20
KAFKA_EVENTS = 20_000
PARTITIONS = 3
BATCH = 500  # records per source batch
KINESIS_EVENTS = 12_000  # moto serves about 4,000 records/s


def _scrape(port: int, name: str) -> float | None:
    """Sum of a metric's samples on the flow's /metrics; None while the endpoint is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]
    return sum(values) if values else None


class _Sampler(threading.Thread):
    """Scrapes a metric every 0.2 s, tagging each sample with whether the cut was in effect."""

    def __init__(self, port: int, name: str, proxy: TcpProxy) -> None:
        super().__init__(daemon=True)
        self.port, self.name, self.proxy = port, name, proxy
        self.samples: list[tuple[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            phase = "during" if self.proxy.cutting.is_set() else ("after" if self.proxy.restored.is_set() else "before")
            value = _scrape(self.port, self.name)
            # A sample is only "during" if the cut was in effect both before and after the scrape.
            if value is not None and (phase != "during" or self.proxy.cutting.is_set()):
                self.samples.append((phase, value))

    def of(self, phase: str) -> list[float]:
        return [value for p, value in self.samples if p == phase]


def _kafka_lags(port: int) -> dict[str, float] | None:
    """``paywatch_kafka_lag_records`` per partition on the flow's /metrics; None while the endpoint is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    prefix = 'paywatch_kafka_lag_records{partition="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


class _KafkaLagLog:
    """Every Kafka lag value the flow set (``tests.support.lag_recorder``), each placed by the cut's phase.

    Not scraped: a scrape samples the gauge, and a partition's restored backlog
    can be fetched and read between two scrapes (librdkafka fetches it in its
    own threads within milliseconds), so whether a scrape saw the lag rise
    depended on timing. The log holds each value the source set, in order, and
    the proxy's clock marks (``cut_at``, ``restored_at``, the same monotonic
    clock) place each one: after ``cut_at`` no byte reaches the flow, before
    ``restored_at`` none had yet.
    """

    def __init__(self, path: Path, proxy: TcpProxy) -> None:
        self.path, self.proxy = path, proxy
        self.updates: list[LagUpdate] = []
        self._offset = 0

    def refresh(self) -> None:
        new, self._offset = read_updates(self.path, self._offset)
        self.updates.extend(update for update in new if update.source == "kafka")

    def _phase(self, at: float) -> str:
        cut_at, restored_at = self.proxy.cut_at, self.proxy.restored_at
        if cut_at is None or at <= cut_at:
            return "before"
        return "during" if restored_at is None or at < restored_at else "after"

    def of(self, phase: str, part: str) -> list[float]:
        return [u.value for u in self.updates if u.partition == part and self._phase(u.at) == phase]

    def rose(self, part: str) -> bool:
        """After the restore, the partition's lag rose above what it held while cut."""
        held, after = self.of("during", part), self.of("after", part)
        return any(lag > (held[-1] if held else 0) for lag in after)

    def rose_and_drained(self, parts: Iterable[str]) -> bool:
        """Every partition's lag rose after the restore and came back to 0 since."""
        return all(self.rose(part) and self.of("after", part)[-1:] == [0] for part in parts)

    def latest(self, phase: str) -> dict[str, float]:
        return {u.partition: u.value for u in self.updates if self._phase(u.at) == phase}


class _Producer(threading.Thread):
    """Sends ``events`` 250 at a time, every quarter second, once the cut is in effect (on connections the cut
    spares); counts per partition the records the broker took during the cut."""

    def __init__(self, producer: KafkaProducer, topic: str, proxy: TcpProxy, events: list[tuple[str, bytes]]) -> None:
        super().__init__(daemon=True)
        self.producer, self.topic, self.proxy, self.events = producer, topic, proxy, events
        self.during: Counter[str] = Counter()

    def run(self) -> None:
        self.proxy.cutting.wait()
        for i in range(0, len(self.events), 250):
            futures = [self.producer.send(self.topic, key=k.encode(), value=v) for k, v in self.events[i : i + 250]]
            self.producer.flush()
            for future in futures:
                meta = future.get(timeout=10)
                if self.proxy.cutting.is_set():
                    self.during[f"{self.topic}/{meta.partition}"] += 1
            threading.Event().wait(0.25)


@pytest.mark.integration
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_kafka_flow_rides_out_a_cut_of_every_connection(server_logs, tmp_path: Path, monkeypatch, client: str):
    """Half the events, an unbounded run cut for 20 s while the other half is produced; the lag shows it."""
    proxy_port = free_port()
    broker = start_tansu(server_logs, advertised_port=proxy_port)  # every client is told the proxy's address
    proxy = TcpProxy(broker.port, proxy_port).start()
    producer = None
    try:
        address = f"127.0.0.1:{proxy_port}"
        topic = f"o-{uuid.uuid4().hex[:10]}"
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(topic + "-warm", 1, 1)])
        admin.close()
        # Small fetches (16 KB per partition): a partition's backlog after the cut takes several fetches.
        kafka = {
            "brokers": [address],
            "topic": topic,
            "client": client,
            "fetch_max_wait_ms": 50,
            "max_partition_fetch_bytes": 16384,
        }
        settings = KafkaSourceSettings(**kafka)
        events = _events(KAFKA_EVENTS)
        first, second = events[: len(events) // 2], events[len(events) // 2 :]
        publish_kafka(settings, first, linger_ms=5)
        ends = Counter(f"{topic}/{(murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS}" for key, _ in first)
        # The producer of the second half: its connections (opened by a record to another topic, while no
        # other client is connected) are spared by the cut.
        producer = KafkaProducer(**producer_config(settings, acks=1, linger_ms=5))
        producer.send(topic + "-warm", value=b"{}").get(timeout=30)
        proxy.spare_open()
        writer = _Producer(producer, topic, proxy, second)
        writer.start()

        # Silent partitions must not close windows by wall-clock idleness during the cut:
        # the reference run is never silent. Chunks stay at BATCH, well under what each
        # partition is sent during the cut: the first chunk read after the restore leaves
        # a lag above 0 whatever the client has fetched by then, so every partition's rises.
        source = {
            "type": "kafka",
            "kafka": kafka,
            "batch_size": BATCH,
            "max_batch_size": BATCH,
            "idle_partition_seconds": 3600,
        }
        recovery = tmp_path / "recovery"
        recovery.mkdir()
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
        metrics_port = free_port()
        monkeypatch.setenv("PAYWATCH__METRICS__PORT", str(metrics_port))
        lag_log = tmp_path / "lag.log"
        monkeypatch.setenv(LOG_VARIABLE, str(lag_log))
        cut = _config(tmp_path, "cut", source)
        proc = start_flow(cut, recovery=recovery, runner="tests.support.lag_recorder")
        sampler = _KafkaLagLog(lag_log, proxy)

        def until(done: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + OUTAGE_SECONDS + 60  # a guard against a hang, not a measure
            while True:
                sampler.refresh()
                if done():
                    return
                assert proc.poll() is None, stderr_of(cut)  # the flow never exits
                assert time.monotonic() < deadline, (
                    f"{what}: {[u for u in sampler.updates if u.value][-30:]}, produced {writer.during}"
                )
                threading.Event().wait(0.05)

        # Cut once every partition has been built and has read data (the flow's own lag says so) ...
        until(lambda: all(sampler.latest("before").get(part, end) < end for part, end in ends.items()), "read")
        # ... for 20 s and until the other half is in: so every fetch after the restore carries the final high
        # watermark, and the lag, once it has risen, can only drain.
        proxy.cut()
        cut_at = time.monotonic()
        until(lambda: not writer.is_alive() and time.monotonic() >= cut_at + OUTAGE_SECONDS, "writing during the cut")
        proxy.restore()
        # Once restored, wait for the flow's lag to count what was produced during the cut, then to drain.
        until(lambda: sampler.rose_and_drained(ends), "lag rising then draining")
        # The exporter shows what the flow set last (a steady state now, not a race with a scrape).
        assert _kafka_lags(metrics_port) == dict.fromkeys(ends, 0.0)
        # An unbounded run ends only by a kill: a bounded resume then finishes the last minutes.
        proc.kill()
        proc.wait()
        bounded = {**source, "kafka": {**kafka, "bounded": True}}
        resumed = _config(tmp_path, "cut", bounded)
        finish(start_flow(resumed, recovery=recovery), resumed)
        reference = _config(tmp_path, "reference", bounded)
        finish(start_flow(reference), reference)
    finally:
        if producer is not None:
            producer.close()
        proxy.stop()
        broker.stop()

    ref, out = tmp_path / "reference", tmp_path / "cut"
    for kind in ("metrics", "alerts", "dead_letter"):
        assert jsonl_lines(out, kind) == jsonl_lines(ref, kind), kind
    assert len(jsonl_lines(out, "dead_letter")) == len(BAD)
    assert len(jsonl_lines(out, "transactions")) == KAFKA_EVENTS  # it resumed reading and read everything once
    assert set(writer.during) == set(ends)  # records went in during the cut, to every partition
    for part in ends:
        # While cut, nothing new reaches the flow: the lag never rises although records are being added.
        held = sampler.of("during", part)
        assert held and held == sorted(held, reverse=True), part
        # Once restored, fetch answers carry the new high watermark: the lag rises by what came in meanwhile,
        # less at most the one chunk (BATCH records) the flow read with the first of them ...
        after = sampler.of("after", part)
        assert sampler.rose(part) and max(after) >= writer.during[part] - BATCH, (part, max(after), writer.during)
        peak = after.index(max(after))
        # ... then drains back to 0 as the flow reads it.
        assert after[peak:] == sorted(after[peak:], reverse=True) and after[-1] == 0, part
    assert sum(writer.during.values()) == len(second)  # the whole second half went in while cut


@pytest.mark.integration
def test_kinesis_flow_rides_out_a_cut_of_every_connection(moto, tmp_path: Path, monkeypatch):
    stream = f"o-{uuid.uuid4().hex[:10]}"
    client = boto3.client("kinesis", endpoint_url=moto.url, region_name="us-east-1")
    client.create_stream(StreamName=stream, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    kinesis = {
        "stream_name": stream,
        "bounded": True,
        "min_poll_interval_seconds": 0.0,
        "idle_poll_interval_seconds": 0.05,
        "max_backoff_seconds": 2.0,  # keeps the wait after the restore short
    }
    publish_kinesis(
        KinesisSourceSettings(**kinesis), AwsSettings(endpoint_url=moto.url), _events(KINESIS_EVENTS), client=client
    )
    proxy = TcpProxy(moto.port).start()  # the flow reaches moto only through the proxy
    try:
        monkeypatch.setenv("PAYWATCH__AWS__ENDPOINT_URL", proxy.url)
        source = {"type": "kinesis", "kinesis": kinesis, "idle_partition_seconds": 3600}
        reference = _config(tmp_path, "reference", source)
        start = proxy.forwarded
        finish(start_flow(reference), reference)
        read_bytes = proxy.forwarded - start

        metrics_port = free_port()
        monkeypatch.setenv("PAYWATCH__METRICS__PORT", str(metrics_port))
        cut = _config(tmp_path, "cut", source)
        proxy.cut_after(read_bytes // 2, OUTAGE_SECONDS)
        sampler = _Sampler(metrics_port, "paywatch_kinesis_millis_behind_latest", proxy)
        proc = start_flow(cut)
        sampler.start()
        finish(proc, cut, timeout=OUTAGE_SECONDS + 120)
        sampler.done.set()
        sampler.join()
    finally:
        proxy.stop()

    assert proxy.restored.is_set()
    ref, out = tmp_path / "reference", tmp_path / "cut"
    for kind in ("metrics", "alerts", "dead_letter"):
        assert jsonl_lines(out, kind) == jsonl_lines(ref, kind), kind
    assert len(jsonl_lines(out, "dead_letter")) == len(BAD)
    assert len(jsonl_lines(out, "transactions")) == KINESIS_EVENTS
    during = sampler.of("during")
    assert len(set(during)) <= 1  # no GetRecords answered while cut: the lag stays where it was
    assert during and during[0] > 0  # and shows records waiting


@pytest.mark.integration
def test_a_cut_by_traffic_lets_nothing_through_once_it_is_marked():
    """The bytes that reach ``cut_after``'s count, and all after them, never reach the client.

    What the Kinesis test relies on: an answer cut in the middle stays incomplete,
    so the reader cannot act on it (and move its lag) while ``cutting`` is set.
    """
    payload = bytes(range(256)) * 4096  # 1 MiB, sent in one go
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: server.accept()[0].sendall(payload), daemon=True).start()
    proxy = TcpProxy(server.getsockname()[1]).start()
    try:
        proxy.cut_after(300_000, outage_seconds=0.2)
        received = bytearray()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            try:
                while chunk := client.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
        # The client can see its connection closed before the proxy's thread marks the cut: wait for the mark.
        assert proxy.restored.wait(10)  # set only once a cut has been made and is over
        assert 0 < len(received) < 300_000 and bytes(received) == payload[: len(received)]
        assert proxy.forwarded == len(received)  # every byte counted was delivered, and no other
    finally:
        proxy.stop()
        server.close()
