"""Where lake objects go: Hive-style ``<zone>/date=YYYY-MM-DD/hour=HH/<file>.parquet``.

Object names are built only from what the object holds (zone, hour, source
partition, first and last source position; or zone, time bucket and sink
partition), never from the wall clock or a counter, so that a replay after a
crash writes the same names again and overwrites instead of adding copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Optional
from zlib import crc32

RAW = "raw"
ENRICHED = "enriched"
ALERTS = "alerts"
METRICS = "metrics"
ZONES = (RAW, ENRICHED, ALERTS, METRICS)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 80


@dataclass(frozen=True)
class LakeLocation:
    """Parsed ``sinks.lake.uri``: an S3 bucket and key prefix, or a local directory."""

    bucket: Optional[str]
    prefix: str

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def key(self, relative: str) -> str:
        """The object key (S3) or path (local) of a key relative to the lake root."""
        if self.is_s3:
            return f"{self.prefix}/{relative}" if self.prefix else relative
        return f"{self.prefix.rstrip('/')}/{relative}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.is_s3 else self.prefix


def parse_uri(uri: str) -> LakeLocation:
    """``s3://bucket/prefix`` or a local directory.

    :raises ValueError: an ``s3://`` URI without a bucket, or an empty path.
    """
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"s3 URI {uri!r} names no bucket; expected s3://bucket/prefix")
        return LakeLocation(bucket, prefix.strip("/"))
    if "://" in uri:
        raise ValueError(f"unsupported lake URI {uri!r}: use s3://bucket/prefix or a local directory")
    if not uri.strip():
        raise ValueError("the lake URI is empty")
    return LakeLocation(None, uri)


def hour_partition(zone: str, hour: int) -> str:
    """``zone/date=YYYY-MM-DD/hour=HH`` for an epoch hour (epoch seconds // 3600)."""
    moment = datetime.fromtimestamp(hour * 3600, UTC)
    return f"{zone}/date={moment:%Y-%m-%d}/hour={moment:%H}"


def safe_name(part: str) -> str:
    """A source partition name made safe for a key, kept unique by a checksum.

    ``file:/data/a.jsonl`` and ``file:/data_a.jsonl`` would both read
    ``file_data_a.jsonl``; the CRC of the original name keeps them apart.
    """
    cleaned = _UNSAFE.sub("_", part).strip("_")[:_MAX_NAME] or "part"
    return f"{cleaned}-{crc32(part.encode()):08x}"


def position_file(zone: str, hour: int, part: str, first: object, last: object) -> str:
    """The relative key of a raw/enriched file: its source partition and position range."""
    return f"{hour_partition(zone, hour)}/{safe_name(part)}-{first}-{last}.parquet"


def bucket_file(zone: str, bucket_start: int, sink_part: str, suffix: str = "") -> str:
    """The relative key of an alerts/metrics file: its event-time bucket and sink partition."""
    moment = datetime.fromtimestamp(bucket_start, UTC)
    return f"{hour_partition(zone, bucket_start // 3600)}/{zone}-{moment:%Y%m%dT%H%M%SZ}-{sink_part}{suffix}.parquet"
