"""The JSONL file source hands the flow payloads without line terminators, resumably."""

from __future__ import annotations

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
