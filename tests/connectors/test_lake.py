"""The lake's pure parts: names, deterministic file rolling, buckets, tables, settings."""

from __future__ import annotations

import math
import pickle
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import SettingsError, load_settings
from connectors.lake import layout
from connectors.lake.buckets import Buckets
from connectors.lake.rolling import Roller
from connectors.lake.sink import LakeFile
from connectors.lake.tables import (
    ENRICHED_SCHEMA,
    RAW_SCHEMA,
    TableSource,
    alert_record,
    encode_parquet,
    enriched_rows,
    metric_records,
    raw_rows,
    rows_table,
)
from connectors.sinks.dead_letter import encode
from operators.events.timestamps import TimestampParser
from operators.records import LakeChunk

T0 = 1752087600  # 2025-07-09T19:00:00Z


def _rows(times: list[float], sizes: list[int], start: int) -> tuple[TableSource, np.ndarray, np.ndarray, np.ndarray]:
    t = np.array(times, dtype=np.float64)
    table = TableSource(pa.table({"i": pa.array(np.arange(start, start + len(times)))}))
    hours = (np.where(np.isnan(t), T0, t) // 3600).astype(np.int64)
    return table, hours, t, np.array(sizes, dtype=np.int64)


def _tables(segments) -> list[pa.Table]:
    return [src.table() if idx is None else src.table().take(pa.array(idx)) for src, idx in segments]


def _files_for(chunk_size: int, times: list[float], sizes: list[int], target: int, max_age: float) -> list[tuple]:
    """Feed the same rows in chunks of ``chunk_size`` (snapshotting in between); return the files."""
    roller = Roller("raw", "p", target, max_age)
    files = []
    for start in range(0, len(times), chunk_size):
        table, hours, t, s = _rows(times[start : start + chunk_size], sizes[start : start + chunk_size], start)
        for done in roller.add(table, hours, t, s, lambda i, start=start: start + i):
            rows = pa.concat_tables(_tables(done.segments)).column("i").to_pylist()
            files.append((done.hour, done.first, done.last, done.rows, tuple(r + 0 for r in rows)))
        roller = Roller("raw", "p", target, max_age, pickle.loads(pickle.dumps(roller.snapshot())))
    for done in roller.flush():
        rows = pa.concat_tables(_tables(done.segments)).column("i").to_pylist()
        files.append((done.hour, done.first, done.last, done.rows, tuple(rows)))
    return sorted(files)


def test_roll_points_do_not_depend_on_chunking():
    rng = np.random.default_rng(3)
    n = 1200
    times = list(T0 + np.sort(rng.uniform(0, 7200, n)) + rng.normal(0, 30, n))
    for i in range(0, n, 97):
        times[i] = math.nan  # unreadable event time: no effect on the clock
    sizes = list(rng.integers(50, 400, n))
    reference = _files_for(n, times, sizes, target=40_000, max_age=300)
    assert len(reference) > 10
    for chunk_size in (1, 7, 250, 1000):
        files = _files_for(chunk_size, times, sizes, target=40_000, max_age=300)
        # Same names (hour, first, last) and the same rows in each.
        assert [f[:4] for f in files] == [f[:4] for f in reference], chunk_size
    rows_in_files = sorted(i for f in reference for i in f[4])
    assert rows_in_files == [i for i in range(n)]  # every row exactly once


def test_files_end_by_size_and_by_event_time_age():
    # 10 rows of 100 bytes in one hour, one per second: size cuts every 3 rows.
    files = _files_for(10, [T0 + i for i in range(10)], [100] * 10, target=300, max_age=1000)
    assert [(f[1], f[2]) for f in files] == [("0", "2"), ("3", "5"), ("6", "8"), ("9", "9")]
    # Age: the clock passes the file's start + 60 s at row 6 (T0 + 60).
    files = _files_for(3, [T0 + i * 10 for i in range(10)], [1] * 10, target=10**9, max_age=60)
    assert [(f[1], f[2]) for f in files] == [("0", "5"), ("6", "9")]


def test_a_file_holds_one_hour():
    files = _files_for(5, [T0 + 3590, T0 + 3599, T0 + 3600, T0 + 3595, T0 + 3700], [1] * 5, target=10**9, max_age=300)
    by_hour = {f[0]: f[4] for f in files}
    assert by_hour == {T0 // 3600: (0, 1, 3), T0 // 3600 + 1: (2, 4)}


def test_buckets_write_each_id_once_whatever_the_order():
    def run(order: list[int]) -> dict:
        buckets = Buckets("alerts", 300)
        out = {}
        records = [(f"a{i}", T0 + i * 40.0, {"id": f"a{i}"}) for i in range(30)]
        for i in order:
            for done in buckets.add([records[i], records[i]]):
                out[(done.start, done.suffix)] = [r["id"] for r in done.rows]
        for done in buckets.flush():
            out[(done.start, done.suffix)] = [r["id"] for r in done.rows]
        return out

    forward = run(list(range(30)))
    assert sorted(i for ids in forward.values() for i in ids) == sorted(f"a{i}" for i in range(30))
    swapped = list(range(30))
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert run(swapped) == forward
    assert all(start % 300 == 0 for start, _ in forward)


def test_a_late_record_goes_to_an_extra_object():
    buckets = Buckets("alerts", 60)
    assert buckets.add([("a", T0 + 1, {"id": "a"})]) == []
    closed = buckets.add([("b", T0 + 200, {"id": "b"})])
    assert [(d.start, d.suffix, len(d.rows)) for d in closed] == [(T0, "", 1)]
    late = buckets.add([("c", T0 + 2, {"id": "c"})])
    assert len(late) == 1 and late[0].start == T0 and late[0].suffix.startswith("-late-")


def test_layout_names():
    assert layout.parse_uri("s3://bkt/a/b/") == layout.LakeLocation("bkt", "a/b")
    assert layout.parse_uri("s3://bkt").key("raw/x") == "raw/x"
    assert layout.parse_uri("./lake").key("raw/x") == "./lake/raw/x"
    with pytest.raises(ValueError):
        layout.parse_uri("gs://x/y")
    name = layout.position_file("raw", T0 // 3600, "file:/data/a.jsonl", 0, 99)
    assert name.startswith("raw/date=2025-07-09/hour=19/file_data_a.jsonl-")
    assert name.endswith("-0-99.parquet")
    assert layout.safe_name("a/b") != layout.safe_name("a_b")
    assert layout.bucket_file("alerts", T0 + 300, "lake-0") == (
        "alerts/date=2025-07-09/hour=19/alerts-20250709T190500Z-lake-0.parquet"
    )


def _lake_chunk() -> LakeChunk:
    good = (
        b'{"transaction_id":"t1","timestamp":"2025-07-09T19:00:01Z","amount":12.3,"user_id":"u1",'
        b'"payment_status":"declined","region":"EU"}'
    )
    numeric_user = (
        b'{"transaction_id":"t2","timestamp":1752087602000,"amount":0.1,"user_id":7,'
        b'"payment_status":"SUCCESS","region":"EU"}'
    )
    lines = [
        good,
        b"{broken",
        b"\xff\xfe not utf-8",
        numeric_user,
        b'{"transaction_id":"t3","timestamp":"2025-07-09T21:00:00Z"}',
    ]
    enrich = (
        b',"category":"standard","fraud_score":0,"fraud_status":"APPROVED","processed_at":"2026-01-01T00:00:00.000Z"}\n'
    )
    return LakeChunk(
        part="file:x",
        origin="x.jsonl",
        lines=lines,
        first_position=10,
        positions=None,
        received_at=T0 + 86400.5,
        line_times=[T0 + 1.0, math.nan, math.nan, T0 + 2.0, math.nan],
        valid=[0, 3],
        transactions=good[:-1] + enrich + numeric_user[:-1] + enrich,
    )


def test_raw_rows_keep_every_line_and_place_it_by_event_or_receive_time():
    rows = raw_rows(_lake_chunk(), TimestampParser(2000, 2100), 300.0)
    t = rows.source.table()
    assert t.num_rows == 5
    assert t.column("position").to_pylist() == ["10", "11", "12", "13", "14"]
    assert t.column("line").to_pylist()[2] is None
    assert t.column("line_bytes").to_pylist()[2] == b"\xff\xfe not utf-8"
    assert t.column("line").to_pylist()[1] == "{broken"
    # Rejected line 14 still has a readable timestamp: its event hour (21:00), not the receive hour.
    receive_hour = (T0 + 86400) // 3600
    assert rows.hours.tolist() == [T0 // 3600, receive_hour, receive_hour, T0 // 3600, T0 // 3600 + 2]


def test_only_accepted_events_move_the_file_clock_and_future_lines_stay_in_the_receive_hour():
    chunk = _lake_chunk()
    chunk.lines[1] = b'{"transaction_id":"f","timestamp":"2099-01-01T00:00:00Z","region":"EU"}'
    rows = raw_rows(chunk, TimestampParser(2000, 2100), 300.0)
    assert np.isnan(rows.clock).tolist() == [False, True, True, False, True]  # valid lines 0 and 3 only
    assert rows.hours[1] == (T0 + 86400) // 3600  # dated 2099: not trusted, under its receive hour


def test_enriched_rows_are_typed_and_amounts_exact():
    rows = enriched_rows(_lake_chunk())  # numeric user_id: the line-by-line path
    t = rows.source.table()
    assert t.column("transaction_id").to_pylist() == ["t1", "t2"]
    assert t.column("user_id").to_pylist() == ["u1", "7"]
    assert t.column("amount").to_pylist() == [Decimal("12.3"), Decimal("0.1")]
    assert t.column("failed").to_pylist() == [True, False]
    assert t.column("position").to_pylist() == ["10", "13"]
    assert [v.timestamp() for v in t.column("event_time").to_pylist()] == [T0 + 1, T0 + 2]
    chunk = _lake_chunk()
    chunk.transactions = chunk.transactions.replace(b'"user_id":7', b'"user_id":"7"')
    assert enriched_rows(chunk).source.table().equals(t)  # the Arrow reader gives the same table


def test_alert_and_metric_tables_round_trip_through_parquet():
    alert = {
        "alert_id": "X:OPEN",
        "incident_id": "X",
        "type": "VELOCITY",
        "state": "OPEN",
        "severity": "HIGH",
        "key": "u1",
        "region": "EU",
        "user_id": "u1",
        "transaction_id": "t1",
        "event_time": "2025-07-09T19:00:01.000Z",
        "value": 11.0,
        "threshold": 10.0,
        "message": "m",
        "details": {"count": 11},
        "new_field": 1,
    }
    _, t, row = alert_record(alert)
    assert t == T0 + 1
    table = rows_table("alerts", [row])
    back = pq.read_table(pa.BufferReader(encode_parquet([table], "zstd")))
    assert back.column("details").to_pylist() == ['{"count":11}']
    assert back.column("extra").to_pylist() == ['{"new_field":1}']
    minute = [
        {
            "region": "EU",
            "window_start": "2025-07-09T19:00:00Z",
            "window_end": "2025-07-09T19:01:00Z",
            "count": 5,
            "failures": 1,
            "failure_rate": 20.0,
            "fraud_suspected": 0,
            "review_required": 0,
        }
    ]
    ((record_id, start, mrow),) = metric_records(minute)
    assert (record_id, start) == ("EU|2025-07-09T19:00:00Z", T0)
    assert rows_table("metrics", [mrow]).column("count").to_pylist() == [5]


def test_a_file_survives_a_snapshot_and_a_dead_letter_whole():
    table = pa.table({"a": [1, 2]})
    file = LakeFile("raw/x.parquet", "raw", 2, ((TableSource(table), None),))
    file.encoded("zstd")
    again = pickle.loads(pickle.dumps(file))
    assert again.key == "raw/x.parquet" and again.tables()[0].equals(table)
    import base64

    import orjson

    form = orjson.loads(encode({"raw": file}))["raw"]
    assert form["key"] == "raw/x.parquet" and form["rows"] == 2
    assert pq.read_table(pa.BufferReader(base64.b64decode(form["parquet_base64"]))).equals(table)


def test_lake_settings_fail_at_start_naming_the_key():
    with pytest.raises(SettingsError, match="sinks.lake"):
        load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True}}})
    with pytest.raises(SettingsError, match="sinks.lake.zones"):
        load_settings(environ={}, overrides={"sinks": {"lake": {"zones": ["raw", "bogus"]}}})
    with pytest.raises(SettingsError, match="sinks.lake"):
        load_settings(environ={}, overrides={"sinks": {"lake": {"uri": "s3://Bad_Bucket/x"}}})
    ok = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "s3://bkt/p"}}})
    assert ok.sinks.lake.compression == "zstd"


class _Letters:
    def __init__(self) -> None:
        self.records: list = []

    def write(self, records: list) -> None:
        self.records += records

    def close(self) -> None:
        pass


def test_a_resume_in_a_later_hour_leaves_unreadable_lines_once(tmp_path, monkeypatch):
    """Lines without event time go under their receive hour; a replay an hour later must not double them."""
    import connectors.lake.sink as sink_module
    from connectors.lake.sink import LakeSink

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": str(tmp_path)}}})
    hour1, hour2 = T0 + 86400 * 30, T0 + 86400 * 30 + 3600

    def chunk(first: int, received: float) -> LakeChunk:
        lines = [b"{not json %d" % i for i in range(first, first + 3)]
        return LakeChunk("file:a", "a", lines, first, None, received, [math.nan] * 3, [], b"")

    monkeypatch.setattr(sink_module, "_wall_clock", lambda: hour1 + 10)
    crashed = LakeSink(settings, _Letters()).build_part("lake", "lake-0", None)
    crashed.write_batch([chunk(1, hour1 + 5)])
    snapshot = pickle.loads(pickle.dumps(crashed.snapshot()))
    crashed.write_batch([chunk(4, hour1 + 20)])  # after the snapshot ...
    crashed.close()  # ... written before the crash: lines 1-6 under hour 1

    monkeypatch.setattr(sink_module, "_wall_clock", lambda: hour2 + 10)
    resumed = LakeSink(settings, _Letters()).build_part("lake", "lake-0", snapshot)
    resumed.write_batch([chunk(4, hour2 + 5)])  # the replay receives lines 4-6 an hour later
    resumed.close()

    table = pq.ParquetDataset(str(tmp_path / "raw")).read()
    assert sorted(int(p) for p in table.column("position").to_pylist()) == [1, 2, 3, 4, 5, 6]
    hours = {p.parent.name for p in (tmp_path / "raw").rglob("*.parquet")}
    assert len(hours) == 2


def test_the_minute_clock_closes_an_alert_bucket_in_a_quiet_stretch():
    buckets = Buckets("alerts", 300)
    assert buckets.add([("a", T0 + 10, {"id": "a"})]) == []
    assert buckets.advance(T0 + 500) == []  # bucket end + 300 s not reached
    closed = buckets.advance(T0 + 600)
    assert [(d.start, [r["id"] for r in d.rows]) for d in closed] == [(T0, ["a"])]


def test_snapshots_are_compressed_when_pickled_and_older_formats_still_load():
    from connectors.lake.sink import LAKE_FORMAT, Compressed, _plain
    from operators.state.snapshots import MARK

    lines = [b'{"transaction_id":"t%d","region":"EU","payment_status":"SUCCESS"}' % i for i in range(2000)]
    state = ({}, {}, [lines], {"file:a": 7}, 123.0)
    snapshot = LAKE_FORMAT.save(Compressed(state))
    stored = pickle.dumps(snapshot)
    assert len(stored) * 4 < len(pickle.dumps(state))
    assert _plain(LAKE_FORMAT.load(pickle.loads(stored))) == state
    assert _plain(LAKE_FORMAT.load(snapshot)) == state  # never pickled (no recovery)
    version_1 = (MARK, "lake", 1, ({}, {}, []))
    assert _plain(LAKE_FORMAT.load(version_1)) == ({}, {}, [], {}, None)
    version_2 = (MARK, "lake", 2, state)
    assert _plain(LAKE_FORMAT.load(version_2)) == state


def test_enriched_amount_from_the_parse_step_is_the_exact_decimal_of_its_text():
    """Nine decimals on a five-digit amount: 14 significant digits, which no float path guarantees."""
    from operators.parse import ChunkParser
    from operators.records import RawChunk

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "/tmp/unused"}}})
    line = (
        b'{"transaction_id":"d1","timestamp":"2025-07-09T19:00:03Z","payment_status":"SUCCESS",'
        b'"amount":98765.123456789,"region":"EU"}'
    )
    _, parsed = ChunkParser(settings).parse(None, RawChunk("file:x", 1, [line], "x", 0))
    chunk = parsed.lake
    assert chunk is not None
    assert chunk.enrichment_keys is not None  # the own fields are read from the line itself
    assert enriched_rows(chunk).source.table().column("amount").to_pylist() == [Decimal("98765.123456789")]
    chunk.enrichment_keys = None  # and from the scored JSONL, without the parse step's keys
    assert enriched_rows(chunk).source.table().column("amount").to_pylist() == [Decimal("98765.123456789")]


_MIXED_LINES = [
    b'{"transaction_id":"a1","timestamp":"2025-07-09T19:00:01Z","payment_status":"SUCCESS","amount":12.5,'
    b'"currency":"USD","user_id":"u1","merchant_name":"Shop","device":"mobile","region":"EU"}',
    # Fraud-looking: flagged, scored high.
    b'{"transaction_id":"a2","timestamp":"2025-07-09T19:00:02Z","payment_status":"failed","amount":25000,'
    b'"currency":"XXX","user_id":"u2","region":"US-EAST"}',
    # Brings Paywatch's own fields: the parse step rewrites its JSONL line without them.
    b'{"transaction_id":"a3","timestamp":"2025-07-09T19:00:03Z","payment_status":"SUCCESS","amount":1,'
    b'"fraud_score":99,"category":"x","processed_at":"1999-01-01T00:00:00Z","region":"EU"}',
    b'{"transaction_id":"a4","timestamp":"2025-07-09T19:00:04Z","payment_status":"DECLINED","amount":0.000000001,'
    b'"merchant_name":"Caf\xc3\xa9 \\"Z\\"","merchant_id":"m9","region":"APAC"}  ',
    b'{"transaction_id":"a5","timestamp":"2025-07-09T19:00:05Z","payment_status":"SUCCESS","amount":7,'
    b'"card_number":"4111111111111111","region":"EU"}',
    b"{broken",
    b"\xff\xfe not utf-8",
    b'{"transaction_id":"a6","timestamp":1752087606000,"amount":0.1,"user_id":7,"payment_status":"SUCCESS",'
    b'"region":"EU"}',
]


@pytest.mark.parametrize("picks", [[0, 1, 2, 3, 4], [0, 5, 1, 6, 2, 3, 4], [4, 3, 2, 1, 0, 7, 6, 5], [5, 6], [0]])
def test_enriched_columns_from_the_lines_and_suffixes_equal_those_read_from_the_scored_jsonl(picks):
    """The fast path (own fields from the line, added ones from the parse step's few suffixes)
    gives the very table the whole scored JSONL gives, whatever mix of lines a chunk holds."""
    from operators.parse import ChunkParser
    from operators.records import RawChunk

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "/tmp/unused"}}})
    lines = [_MIXED_LINES[i] for i in picks]
    _, parsed = ChunkParser(settings).parse(None, RawChunk("file:x", 1, lines, "x", 0))
    chunk = parsed.lake
    assert chunk is not None
    fast = enriched_rows(chunk)
    valid = len(chunk.valid) > 0
    assert fast.source.keys is not None or not valid
    keys, times = chunk.enrichment_keys, chunk.line_times
    chunk.line_times = [float(t) for t in times]  # lists do as well as arrays
    chunk.enrichment_keys = None if keys is None else [int(k) for k in keys]
    chunk.valid = [int(i) for i in chunk.valid]
    as_lists = enriched_rows(chunk)
    if valid:
        assert as_lists.source.table().equals(fast.source.table())
    chunk.enrichment_keys = None
    slow = enriched_rows(chunk)
    assert slow.source.keys is None
    if valid:
        # The same rows and values (the few-valued columns are dictionaries built differently).
        assert fast.source.table().cast(ENRICHED_SCHEMA).equals(slow.source.table().cast(ENRICHED_SCHEMA))
        assert fast.source.table().num_rows == parsed.n_transactions
        # What a reader sees: the catalog's types (strings, not the build's dictionaries).
        written = pq.read_table(pa.BufferReader(encode_parquet([fast.source.table()], "zstd")))
        assert written.schema.remove_metadata() == ENRICHED_SCHEMA
        assert written.equals(slow.source.table().cast(ENRICHED_SCHEMA))
        # Row sizes (where files roll) from the line and its suffix: the JSONL line's length,
        # for every line the parse step copies as it is (ends at its brace, no added fields).
        plain = [chunk.lines[i].endswith(b"}") and b'"category"' not in chunk.lines[i] for i in chunk.valid]
        assert any(plain)
        assert fast.sizes[plain].tolist() == slow.sizes[plain].tolist()
    raw = raw_rows(chunk, TimestampParser(2000, 2100), 300.0).source.table()
    assert raw.num_rows == len(lines)
    written_raw = pq.read_table(pa.BufferReader(encode_parquet([raw], "zstd")))
    assert written_raw.schema.remove_metadata() == RAW_SCHEMA
    assert written_raw.equals(raw.cast(RAW_SCHEMA))


def test_a_snapshot_of_format_3_holding_whole_chunks_still_resumes():
    """Sources pickled before the lines became Arrow buffers held the LakeChunk itself."""
    from connectors.lake.tables import EnrichedSource, RawSource

    chunk = _lake_chunk()
    chunk.transactions = chunk.transactions.replace(b'"user_id":7', b'"user_id":"7"')
    expected_raw = raw_rows(chunk, TimestampParser(2000, 2100), 300.0)
    expected_enriched = enriched_rows(chunk)
    del chunk.array  # the LakeChunk of those releases had no such field: unpickled, it stays unset
    old_raw = RawSource.__new__(RawSource)
    old_raw.__setstate__({"_table": None, "chunk": chunk, "times": expected_raw.source.times})
    old_enriched = EnrichedSource.__new__(EnrichedSource)
    old_enriched.__setstate__(
        {"_table": None, "chunk": chunk, "times": expected_enriched.source.times, "index": expected_enriched.index}
    )
    restored_raw, restored_enriched = pickle.loads(pickle.dumps((old_raw, old_enriched)))
    assert restored_raw.table().equals(expected_raw.source.table())
    assert restored_enriched.table().equals(expected_enriched.source.table())


def test_the_lake_alone_gets_the_enrichment_keys_without_the_parse_step_building_the_jsonl():
    """No output of every transaction (flagged-only storage) but the lake on: the parse step skips
    the JSONL blob, and the lake's enriched rows are those it reads with the blob built."""
    from operators.parse import ChunkParser
    from operators.records import RawChunk

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "/tmp/unused"}}})
    lines = list(_MIXED_LINES)
    _, without = ChunkParser(settings, transaction_lines=False).parse(None, RawChunk("file:x", 1, lines, "x", 0))
    _, with_jsonl = ChunkParser(settings, transaction_lines=True).parse(None, RawChunk("file:x", 1, lines, "x", 0))
    assert without.transactions == b"" and with_jsonl.transactions
    assert without.lake is not None and with_jsonl.lake is not None
    assert without.lake.transactions == b""
    alone, built = enriched_rows(without.lake), enriched_rows(with_jsonl.lake)
    assert alone.source.keys is not None
    assert alone.sizes.tolist() == built.sizes.tolist()  # the same roll points
    same = [name for name in ENRICHED_SCHEMA.names if name != "processed_at"]  # each parse's own clock
    assert alone.source.table().select(same).equals(built.source.table().select(same))
    assert alone.source.table().num_rows == with_jsonl.n_transactions == 6


def test_the_valid_lines_are_read_back_to_back_whatever_lies_between_their_objects():
    """The own fields are read from the lines' data buffer as it lies (no newline between lines):
    whitespace, a carriage return or nested values at a line's ends must not merge or shift rows."""
    from connectors.lake.tables import ChunkLines, _own_fields

    lines = [
        b'{"transaction_id":"a","amount":1.5,"nested":{"x":[1,{"y":"}"}]}}\r',
        b"{broken",
        b' \t{"transaction_id":"b","user_id":"u2","amount":"0.10"} ',
        b'{"transaction_id":"c","amount":2.25,"region":"EU"}',
    ]
    chunk = LakeChunk("p", "file:x", lines, 0, None, float(T0), [float(T0)] * 4, [0, 2, 3], b"")
    buffers = ChunkLines(chunk)
    for index in (np.array([0, 2, 3]), np.array([3, 0]), np.array([2])):
        table = _own_fields(buffers, index)
        assert table.column("transaction_id").to_pylist() == [["a", None, "b", "c"][i] for i in index]
    every = _own_fields(
        ChunkLines(LakeChunk("p", "file:x", [lines[0], lines[3]], 0, None, 0.0, [0.0] * 2, [0, 1], b"")), np.arange(2)
    )
    assert every.column("amount").to_pylist() == [Decimal("1.5"), Decimal("2.25")]
    assert every.column("region").to_pylist() == [None, "EU"]


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a":1}', b"", b"\xff\xfe not utf-8", b'{"b":"]"}', b"[1,2]"],
        [b'{"only":"one"}'],
        [b"", b""],
    ],
)
def test_lines_kept_in_the_parse_steps_json_array_are_the_lines_joined_again(lines):
    """The parse step's ``[l0,l1,...]`` shared as the line buffer (a separator after each line)
    gives the same lines, sizes, takes and pickles as the lines joined anew."""
    from connectors.lake.tables import ChunkLines
    from operators.events.decoder import json_array

    def chunk(array):
        return LakeChunk("p", "file:x", lines, 0, None, 0.0, [0.0] * len(lines), [], b"", array=array)

    framed, joined = ChunkLines(chunk(json_array(lines))), ChunkLines(chunk(None))
    assert (framed.frame, joined.frame) == (1, 0)
    assert framed.values.buffers()[2].size == len(json_array(lines))  # the array itself, no copy
    assert framed.lines.equals(joined.lines) and framed.lines.to_pylist() == lines
    assert framed.sizes().tolist() == joined.sizes().tolist() == [len(line) for line in lines]
    index = np.arange(len(lines))[::-1]
    assert framed.line_list(index) == joined.line_list(index) == lines[::-1]
    again = pickle.loads(pickle.dumps(framed))
    assert again.frame == 1 and again.lines.equals(joined.lines)
    # A buffer pickled before lines could be framed (six fields) reads as the lines themselves.
    old = ChunkLines.__new__(ChunkLines)
    old.__setstate__(joined.__getstate__()[:6])
    assert old.frame == 0 and old.lines.equals(joined.lines)
    # An array that is not the lines' (a line masked after it was built) is not used.
    assert ChunkLines(chunk(json_array(lines) + b" ")).frame == 0


def test_the_parse_step_hands_the_lake_its_json_array_and_the_raw_zone_keeps_the_lines_exactly():
    from operators.parse import ChunkParser
    from operators.records import RawChunk

    settings = load_settings(environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "/tmp/unused"}}})
    lines = list(_MIXED_LINES)
    _, parsed = ChunkParser(settings).parse(None, RawChunk("file:x", 1, lines, "x", 0))
    chunk = parsed.lake
    assert chunk is not None and chunk.array is not None
    table = raw_rows(chunk, TimestampParser(2000, 2100), 300.0).source.table()
    written = [
        text.encode() if text is not None else raw
        for text, raw in zip(table.column("line").to_pylist(), table.column("line_bytes").to_pylist(), strict=True)
    ]
    assert written == chunk.lines  # the lines the parse step saw (card numbers masked), exactly


def test_min_max_statistics_only_for_the_times_and_numbers():
    """Statistics of ids and lines prune nothing in arrival-ordered row groups: not written."""
    rows = enriched_rows(_lake_chunk())
    meta = pq.read_metadata(pa.BufferReader(encode_parquet([rows.source.table()], "zstd")))
    group = meta.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)}
    assert {name for name, s in stats.items() if s is not None and s.has_min_max} == {
        "amount",
        "fraud_score",
        "processed_at",
        "event_time",
    }
    raw = raw_rows(_lake_chunk(), TimestampParser(2000, 2100), 300.0).source.table()
    meta = pq.read_metadata(pa.BufferReader(encode_parquet([raw], "zstd")))
    group = meta.row_group(0)
    with_stats = {
        group.column(i).path_in_schema
        for i in range(group.num_columns)
        if group.column(i).statistics is not None and group.column(i).statistics.has_min_max
    }
    assert with_stats == {"received_at", "event_time"}


@pytest.mark.parametrize(
    "lines", [[], [b""], [b"{}", b"", b"\xff\xfe not utf-8", bytearray(b'{"a":1}'), b"x" * 5000], [b"a", "text"]]
)
def test_a_chunks_lines_become_the_binary_array_arrow_itself_would_build(lines):
    """The lines joined in one call and offset by their lengths give Arrow's own array of them."""
    from connectors.lake.tables import _binary_array

    built = _binary_array(lines)
    assert built.equals(pa.array(lines, pa.binary()))
    assert built.to_pylist() == [bytes(line) if not isinstance(line, str) else line.encode() for line in lines]
    restored = pickle.loads(pickle.dumps(built))  # snapshots pickle the lines' array
    assert restored.equals(built)
