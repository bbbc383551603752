"""Lake files encoded while open, a row group at a time: the same object however the rows arrived."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import SettingsError, load_settings
from connectors.lake.encoder import FileEncoder, encode_segments
from connectors.lake.rolling import Roller
from connectors.lake.sink import LakeFile, LakeSink
from connectors.lake.tables import ChunkLines, RawSource, TableSource
from operators.records import LakeChunk

T0 = 1752087600  # 2025-07-09T19:00:00Z
GROUP = 40


def _source(start: int, n: int) -> TableSource:
    """Rows ``start..start+n`` with a dictionary column built per chunk, as the lake's tables have."""
    ids = np.arange(start, start + n)
    kinds = pa.array([f"k{i % 3}" for i in ids]).dictionary_encode()
    return TableSource(pa.table({"i": pa.array(ids), "kind": kinds}))


def _roll(chunk: int, n: int, executor: Executor, snapshot_every: int = 0) -> dict[str, bytes]:
    """Feed ``n`` rows (two hours, files cut by size) in chunks; return each file's bytes by first row."""
    times = T0 + np.arange(n, dtype=np.float64) * (7200 / n)
    make = lambda: FileEncoder("zstd", GROUP, executor)  # noqa: E731
    roller = Roller("raw", "p", target_bytes=150 * 10, max_age=10**6, encoding=make)
    files: list[Any] = []
    for number, start in enumerate(range(0, n, chunk)):
        size = min(chunk, n - start)
        hours = (times[start : start + size] // 3600).astype(np.int64)
        sizes = np.full(size, 10, dtype=np.int64)
        files += roller.add(_source(start, size), hours, times[start : start + size], sizes, lambda i, s=start: s + i)
        if snapshot_every and number % snapshot_every == snapshot_every - 1:
            state = pickle.loads(pickle.dumps(roller.snapshot()))
            roller = Roller("raw", "p", 150 * 10, 10**6, state, make)
    files += roller.flush()
    return {
        done.first: LakeFile(f"raw/{done.first}", "raw", done.rows, done.segments, done.encoding).encoded("zstd")
        for done in files
    }


def _groups(data: bytes) -> list[int]:
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _ids(data: bytes) -> list[int]:
    return pq.read_table(pa.BufferReader(data)).column("i").to_pylist()


def test_row_groups_depend_only_on_the_file_rows_not_on_chunks_threads_or_resumes():
    with ThreadPoolExecutor(max_workers=1) as executor:
        reference = _roll(1000, 1000, executor)
        # 150 rows per file (size rule; the hour's end cuts one more), row groups of 40: 40, 40, 40, 30.
        assert len(reference) == 8
        assert _groups(reference["0"]) == [GROUP, GROUP, GROUP, 30]
        assert sorted(i for data in reference.values() for i in _ids(data)) == list(range(1000))
        for chunk, snapshot_every in ((1, 0), (7, 3), (33, 1), (250, 1)):
            files = _roll(chunk, 1000, executor, snapshot_every)
            assert sorted(files) == sorted(reference), chunk
            for first, data in files.items():
                assert _groups(data) == _groups(reference[first]), (chunk, first)
                assert pq.read_table(pa.BufferReader(data)).equals(pq.read_table(pa.BufferReader(reference[first])))


class _Recorder(Executor):
    """Runs each task at once, and remembers whether it was a last row group."""

    def __init__(self) -> None:
        self.finals: list[bool] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        self.finals.append(args[1])
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def test_full_row_groups_are_encoded_before_the_file_ends_and_the_file_equals_one_encoded_whole():
    recorder = _Recorder()
    encoder = FileEncoder("zstd", GROUP, recorder)
    segments = [(_source(start, 25), None) for start in range(0, 100, 25)]
    encoder.add(segments[0])
    assert recorder.finals == [False]  # every segment goes to the encoding thread as it comes
    assert encoder.row_groups == 0  # 25 rows: its table is built, no row group yet
    encoder.add(segments[1])
    assert encoder.row_groups == 1  # 50 rows: the first row group was written as soon as it was full
    for segment in segments[2:]:
        encoder.add(segment)
    assert recorder.finals == [False] * 4 and encoder.row_groups == 2
    encoder.finish()
    assert recorder.finals == [False] * 4 + [True] and encoder.row_groups == 3
    data = encoder.result()
    assert _groups(data) == [40, 40, 20] and _ids(data) == list(range(100))
    whole = encode_segments(segments, "zstd", GROUP)  # a finished file restored from a snapshot
    assert _groups(whole) == _groups(data)
    assert pq.read_table(pa.BufferReader(whole)).equals(pq.read_table(pa.BufferReader(data)))
    # Readers see plain strings, as in files encoded whole.
    assert pq.read_table(pa.BufferReader(data)).schema.field("kind").type == pa.string()


def _broken(n: int) -> RawSource:
    """Raw rows whose table cannot be built (event times for fewer rows than lines)."""
    lines = [b'{"n":%d}' % i for i in range(n)]
    chunk = LakeChunk("p", "file", lines, 0, None, float(T0), np.full(n, np.nan), [], b"")
    return RawSource(ChunkLines(chunk), np.zeros(n - 1))


def test_a_row_group_that_fails_fails_the_file_and_its_dead_letter_keeps_the_rows():
    with ThreadPoolExecutor(max_workers=1) as executor:
        encoder = FileEncoder("zstd", GROUP, executor)
        broken = _broken(50)
        encoder.add((broken, None))  # its table cannot be built: fails on the encoding thread
        encoder.add((broken, np.arange(3)))
        file = LakeFile("raw/x.parquet", "raw", 53, ((broken, None), (broken, np.arange(3))), encoder)
        encoder.finish()
        with pytest.raises(pa.ArrowInvalid):
            file.encoded("zstd")
        form = file.dead_letter_form()
    assert "parquet_base64" not in form and form["error"]
    lines = [base64.b64decode(line) for line in form["lines_base64"]]
    assert lines == [b'{"n":%d}' % i for i in [*range(50), 0, 1, 2]]


def test_a_pickled_file_is_encoded_again_with_the_same_row_groups():
    segments = tuple((_source(start, 30), None) for start in range(0, 90, 30))
    with ThreadPoolExecutor(max_workers=1) as executor:
        encoder = FileEncoder("zstd", GROUP, executor)
        for segment in segments:
            encoder.add(segment)
        encoder.finish()
        file = LakeFile("raw/x.parquet", "raw", 90, segments, encoder)
        restored = pickle.loads(pickle.dumps(file))
        assert restored.encoder is None
        data = file.encoded("zstd", GROUP)
    again = restored.encoded("zstd", GROUP)
    assert _groups(again) == _groups(data) == [40, 40, 10]
    assert pq.read_table(pa.BufferReader(again)).equals(pq.read_table(pa.BufferReader(data)))


def test_row_group_and_memory_pool_settings_fail_at_start_naming_the_key():
    with pytest.raises(SettingsError, match="sinks.lake.row_group_rows"):
        load_settings(environ={}, overrides={"sinks": {"lake": {"row_group_rows": 10}}})
    with pytest.raises(SettingsError, match="sinks.lake.memory_pool"):
        load_settings(environ={}, overrides={"sinks": {"lake": {"memory_pool": "tcmalloc"}}})
    defaults = load_settings(environ={}).sinks.lake
    assert (defaults.row_group_rows, defaults.memory_pool) == (65_536, "jemalloc")


def test_building_the_lake_makes_its_pool_arrows_default():
    before = pa.default_memory_pool()
    try:
        for name in ("system", "jemalloc"):
            settings = load_settings(
                environ={}, overrides={"sinks": {"lake": {"enabled": True, "uri": "/tmp/unused", "memory_pool": name}}}
            )
            LakeSink(settings, dead_letters=None)  # type: ignore[arg-type]
            assert pa.default_memory_pool().backend_name == name
            assert pa.array([b"x" * 100]).buffers()[2] is not None  # and it allocates
    finally:
        pa.set_memory_pool(before)


class _Counted(TableSource):
    builds = 0

    def _build(self) -> pa.Table:
        _Counted.builds += 1
        return super()._build()


def test_a_chunk_cut_between_two_files_is_built_once():
    _Counted.builds = 0
    make = lambda: FileEncoder("zstd", GROUP, None)  # noqa: E731
    roller = Roller("raw", "p", target_bytes=25 * 10, max_age=10**6, encoding=make)  # 25 rows per file
    files = []
    for start in range(0, 100, 20):  # every file ends inside a chunk
        source = _Counted(_source(start, 20).table())
        times = np.full(20, float(T0))
        hours = (times // 3600).astype(np.int64)
        files += roller.add(source, hours, times, np.full(20, 10, dtype=np.int64), lambda i, s=start: s + i)
    files += roller.flush()
    rows = [_ids(LakeFile("k", "raw", f.rows, f.segments, f.encoding).encoded("zstd")) for f in files]
    assert [len(r) for r in rows] == [25, 25, 25, 25] and sum(rows, []) == list(range(100))
    assert _Counted.builds == 5  # one per chunk, though four of them went to two files
