"""Benchmarks clean up after themselves: ``bench.instruction_counts`` leaves no folder behind."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

import bench.instruction_counts as ic


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary folders go under ``tmp_path``; the inputs are tiny and no callgrind runs."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ic, "write_events", lambda path, n: path.write_bytes(b"{}\n" * n))
    monkeypatch.setattr(sys, "argv", ["instruction_counts", "--events", "10", "--warm", "5"])
    return tmp_path


def test_a_finished_run_removes_its_folder(scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen: list[Path] = []

    def count(name: str, args: list[str], tmp: Path) -> int:
        seen.append(tmp)
        assert (tmp / "events.jsonl").read_bytes() == b"{}\n" * 15  # the inputs exist while the runs do
        return 1000 + 100 * len(name)

    monkeypatch.setattr(ic, "count", count)
    assert ic.main() == 0
    assert "| orjson.loads per line |" in capsys.readouterr().out
    assert seen and seen[0].parent == scratch and seen[0].name.startswith("paywatch-ir-")
    assert list(scratch.iterdir()) == []


def test_a_failed_callgrind_run_removes_its_folder_too(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def count(name: str, args: list[str], tmp: Path) -> int:
        (tmp / f"callgrind.{name}").write_bytes(b"partial")
        raise SystemExit(f"callgrind run {args} failed")

    monkeypatch.setattr(ic, "count", count)
    with pytest.raises(SystemExit, match="callgrind run"):
        ic.main()
    assert list(scratch.iterdir()) == []
