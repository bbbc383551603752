"""What the JSONL sinks wrote: ``<kind>-<n>.jsonl`` files in the output directory."""

from __future__ import annotations

from pathlib import Path

import orjson


def jsonl_lines(out: Path, kind: str) -> list[bytes]:
    """Every line of ``kind`` (alerts, metrics, transactions, dead_letter), sorted: files split by partition."""
    return sorted(line for path in sorted(out.glob(f"{kind}-*.jsonl")) for line in path.read_bytes().splitlines())


def jsonl_records(out: Path, kind: str) -> list[dict]:
    """Every record of ``kind``, in file order (files in name order)."""
    return [
        orjson.loads(line) for path in sorted(out.glob(f"{kind}*.jsonl")) for line in path.read_bytes().splitlines()
    ]
