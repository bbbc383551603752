"""Every connection to the source cut for 20 s in the middle of a read, then restored.

The flow must not exit, must resume reading where it was, and must end with
exactly the output of a run that was never cut; the lag metric must show
the outage (no progress while cut, records waiting once it is over). The cut is triggered by traffic
(``TcpProxy.cut_after``): after a given number of bytes have reached the
flow, so it falls in the middle of the read whatever the machine's speed.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from cli.producer import publish_kafka, publish_kinesis
from config.settings import AwsSettings, KafkaSourceSettings, KinesisSourceSettings
from tests.servers import free_port, start_tansu
from tests.support.flow import finish, start_flow
from tests.support.output import jsonl_lines
from tests.tcp_proxy import TcpProxy
from tests.test_source_recovery import BAD, _config, _events

OUTAGE_SECONDS = 20
KAFKA_EVENTS = 20_000
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


@pytest.mark.integration
def test_kafka_flow_rides_out_a_cut_of_every_connection(server_logs, tmp_path: Path, monkeypatch):
    proxy_port = free_port()
    broker = start_tansu(server_logs, advertised_port=proxy_port)  # every client is told the proxy's address
    proxy = TcpProxy(broker.port, proxy_port).start()
    try:
        address = f"127.0.0.1:{proxy_port}"
        topic = f"o-{uuid.uuid4().hex[:10]}"
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics([NewTopic(topic, 3, 1)])
        admin.close()
        # Small fetches (64 KB per partition), so the read takes many round trips and the cut lands between them.
        kafka = {
            "brokers": [address],
            "topic": topic,
            "bounded": True,
            "fetch_max_wait_ms": 50,
            "max_partition_fetch_bytes": 65536,
        }
        # Small record batches: the broker can then answer the small fetches below in small steps.
        publish_kafka(KafkaSourceSettings(**kafka), _events(KAFKA_EVENTS), linger_ms=5, batch_bytes=16384)
        # Silent partitions must not close windows by wall-clock idleness during the cut:
        # the reference run is never silent.
        source = {"type": "kafka", "kafka": kafka, "idle_partition_seconds": 3600}

        reference = _config(tmp_path, "reference", source)
        start = proxy.forwarded
        finish(start_flow(reference), reference)
        read_bytes = proxy.forwarded - start  # what a whole run receives through the proxy

        metrics_port = free_port()
        monkeypatch.setenv("PAYWATCH__METRICS__PORT", str(metrics_port))
        cut = _config(tmp_path, "cut", source)
        proxy.cut_after(read_bytes // 2, OUTAGE_SECONDS)  # half-way through the run's traffic
        sampler = _Sampler(metrics_port, "paywatch_kafka_lag_records", proxy)
        proc = start_flow(cut)
        sampler.start()
        finish(proc, cut, timeout=OUTAGE_SECONDS + 120)
        sampler.done.set()
        sampler.join()
    finally:
        proxy.stop()
        broker.stop()

    assert proxy.restored.is_set()  # the cut happened, in the middle of the read, and ended
    ref, out = tmp_path / "reference", tmp_path / "cut"
    for kind in ("metrics", "alerts", "dead_letter"):
        assert jsonl_lines(out, kind) == jsonl_lines(ref, kind), kind
    assert len(jsonl_lines(out, "dead_letter")) == len(BAD)
    assert len(jsonl_lines(out, "transactions")) == KAFKA_EVENTS  # it resumed reading and read everything once
    during, after = sampler.of("during"), sampler.of("after")
    # Nothing is read while cut: the lag stays where it was (with Tansu, whose first fetch answers
    # are large, the cut usually falls in the partitions' first fetch, before any lag is reported).
    assert len(set(during)) <= 1
    assert after and max(after) > 0  # after the restore, records that waited through the cut are read


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
