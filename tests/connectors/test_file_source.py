"""The JSONL file source hands the flow payloads without line terminators, resumably, in growing chunks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sources import file as file_source
from connectors.sources.chunk_size import ChunkSize
from connectors.sources.file import JsonlFileSource


def _read(source: JsonlFileSource, part: str, resume=None) -> list:
    partition = source.build_part("source", part, resume)
    chunks = []
    try:
        while True:
            chunks.extend(partition.next_batch())
    except StopIteration:
        pass
    finally:
        partition.close()
    return chunks


def test_lines_lose_their_newline_and_keep_their_numbers(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\r\n' + b"\n" + b'{"b":2}\n' + b'{"c":3}\n' + b'{"d":4}')
    source = JsonlFileSource(str(path), batch_size=2)
    [part] = source.list_parts()
    chunks = _read(source, part)
    assert [c.lines for c in chunks] == [[b'{"a":1}\r', b""], [b'{"b":2}', b'{"c":3}'], [b'{"d":4}']]
    assert [c.first_position for c in chunks] == [1, 3, 5]
    assert [c.done for c in chunks] == [False, False, True]


def test_resume_continues_after_the_snapshotted_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(5)))
    source = JsonlFileSource(str(path), batch_size=2)
    [part] = source.list_parts()
    partition = source.build_part("source", part, None)
    first = partition.next_batch()
    state = partition.snapshot()
    partition.close()
    rest = _read(source, part, state)
    assert first[0].lines == [b'{"n":0}', b'{"n":1}']
    assert [line for c in rest for line in c.lines] == [b'{"n":%d}' % i for i in range(2, 5)]
    assert rest[0].first_position == 3


def test_chunks_double_while_reading_up_to_the_most_and_resume_small(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(5_000)))
    source = JsonlFileSource(str(path), batch_size=100, max_batch_size=800)
    [part] = source.list_parts()
    chunks = _read(source, part)
    assert [len(c.lines) for c in chunks] == [100, 200, 400, 800, 800, 800, 800, 800, 300]
    assert [c.first_position for c in chunks][:4] == [1, 101, 301, 701]
    assert [line for c in chunks for line in c.lines] == [b'{"n":%d}' % i for i in range(5_000)]
    assert [c.done for c in chunks] == [False] * 8 + [True]

    partition = source.build_part("source", part, None)
    for _ in range(4):
        partition.next_batch()
    state = partition.snapshot()  # after 1,500 lines, the size at 800
    partition.close()
    rest = _read(source, part, state)
    assert [len(c.lines) for c in rest][:3] == [100, 200, 400]  # a resumed file starts small again
    assert rest[0].first_position == 1_501
    assert sum(len(c.lines) for c in rest) == 3_500


def test_a_file_shorter_than_the_first_chunk_is_one_done_chunk(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n')
    [chunk] = _read(JsonlFileSource(str(path), batch_size=100, max_batch_size=800), "file:" + str(path))
    assert chunk.lines == [b'{"n":1}', b'{"n":2}'] and chunk.done


def test_chunk_size_doubles_while_behind_and_falls_back_when_caught_up():
    sizes = ChunkSize(100, 700)
    assert [sizes.update(behind=True) for _ in range(4)] == [200, 400, 700, 700]
    assert sizes.update(behind=False) == 100
    assert sizes.size == 100
    with pytest.raises(ValueError, match="max_batch_size"):
        ChunkSize(100, 99)


_LINES = st.lists(st.sampled_from([b"", b"ab", b"xxxxxxx", b"\r", b'{"a":1}\r']), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    lines=_LINES,
    tail=st.sampled_from([b"", b"tail", b"\r"]),
    count=st.integers(1, 7),
    block=st.sampled_from([1, 2, 3, 5, 64]),
)
def test_block_reads_give_the_lines_and_resume_offsets_of_reading_line_by_line(
    tmp_path_factory, lines, tail, count, block
):
    """Lines split from blocks (any block size, partial lines across blocks, a last line without
    a newline, CRLF) equal the file read line by line, and every offset resumes at the next line."""
    path = tmp_path_factory.mktemp("blocks") / "f.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)

    def chunks(offset: int) -> tuple[list[list[bytes]], list[int]]:
        with pytest.MonkeyPatch.context() as patch, open(path, "rb") as f:
            patch.setattr(file_source, "_READ_BYTES", block)
            f.seek(offset)
            reader = file_source._LineReader(f, offset)
            got, offsets = [], []
            while True:
                taken = reader.take(count)
                got.append(taken)
                offsets.append(reader.offset)
                if len(taken) < count:
                    return got, offsets

    with open(path, "rb") as f:
        expected, expected_offsets = [], []
        while True:
            raw = list(itertools.islice(f, count))
            joined = b"".join(raw)
            expected.append(joined.removesuffix(b"\n").split(b"\n") if raw else [])
            expected_offsets.append(f.tell())
            if len(raw) < count:
                break
    got, offsets = chunks(0)
    assert (got, offsets) == (expected, expected_offsets)
    for k, offset in enumerate(offsets[:-1]):
        assert chunks(offset)[0] == expected[k + 1 :]
