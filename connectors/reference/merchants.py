"""Reading the merchant configuration table: a JSONL or CSV file, or a DynamoDB table.

Rows hold ``merchant_id`` (required, non-empty string), ``name``, ``active``
(boolean; in CSV ``true/false``, ``1/0``, ``yes/no``, ``active/inactive``)
and ``max_transaction_amount`` (a number >= 0; empty or absent = no limit).
A row that breaks these rules is skipped and counted (one log line per load),
so one bad row does not take a million good ones with it; a read that fails
as a whole (file missing, DynamoDB unreachable) raises, and the loader keeps
the last good table.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator
from typing import Any, Optional

import orjson

from config.settings import Settings
from operators.reference.merchants import MerchantRow, MerchantTable

logger = logging.getLogger(__name__)

DYNAMODB_SCHEME = "dynamodb://"
MERCHANT_KEYS = ("merchant_id",)  # the DynamoDB table's key schema (cli/provision.py creates it)
_TRUE = frozenset({"true", "1", "yes", "y", "active", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "inactive", "f", ""})


class MerchantReadError(Exception):
    """The table could not be read at all; the message names the source."""


def _active(value: Any) -> Optional[bool]:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _limit(value: Any) -> tuple[bool, Optional[float]]:
    """(valid, limit): None or an empty string is "no limit"."""
    if value is None or value == "":
        return True, None
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return False, None
    if isinstance(value, bool) or not math.isfinite(amount) or amount < 0:
        return False, None
    return True, amount


def to_row(record: Any) -> Optional[MerchantRow]:
    """A validated row from one decoded record, or None when the record is unusable."""
    if not isinstance(record, dict):
        return None
    merchant_id = record.get("merchant_id")
    if isinstance(merchant_id, int) and not isinstance(merchant_id, bool):
        merchant_id = str(merchant_id)
    if not isinstance(merchant_id, str) or not merchant_id:
        return None
    name = record.get("name")
    if name is not None and not isinstance(name, str):
        return None
    active = _active(record.get("active", True))
    ok, limit = _limit(record.get("max_transaction_amount"))
    if active is None or not ok:
        return None
    return merchant_id, name, active, limit


class _Counted:
    """Rows that pass :func:`to_row`, counting the ones that do not."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.skipped = 0
        self.first_bad: Optional[str] = None

    def rows(self, records: Iterator[tuple[str, Any]]) -> Iterator[MerchantRow]:
        for where, record in records:
            row = to_row(record)
            if row is None:
                self.skipped += 1
                if self.first_bad is None:
                    self.first_bad = where
                continue
            yield row


def _jsonl_records(path: str) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", orjson.loads(line)
            except orjson.JSONDecodeError:
                yield f"line {number}", None


def _csv_records(path: str) -> Iterator[tuple[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "merchant_id" not in reader.fieldnames:
            raise MerchantReadError(f"merchant table {path}: the CSV header must name merchant_id")
        for number, record in enumerate(reader, 2):
            yield f"line {number}", record


def file_records(path: str) -> Iterator[tuple[str, Any]]:
    """(position, record) pairs of a JSONL or CSV (by ``.csv`` suffix) file."""
    return _csv_records(path) if path.lower().endswith(".csv") else _jsonl_records(path)


def _dynamodb_value(attribute: dict[str, Any]) -> Any:
    """A low-level DynamoDB attribute value as plain Python (numbers as float)."""
    if "S" in attribute:
        return attribute["S"]
    if "BOOL" in attribute:
        return attribute["BOOL"]
    if "N" in attribute:
        return float(attribute["N"])
    if "NULL" in attribute:
        return None
    return attribute  # a type a merchant field cannot hold: the row is skipped


def _dynamodb_records(client: Any, table: str) -> Iterator[tuple[str, Any]]:
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        for item in page.get("Items", ()):
            record = {key: _dynamodb_value(value) for key, value in item.items()}
            yield f"item {record.get('merchant_id')!r:.60}", record
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


def file_signature(path: str) -> Optional[tuple[int, int, int]]:
    """(mtime_ns, size, inode) of a file, None when it cannot be stat'ed: a change means re-read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def read_merchants(path: str, settings: Settings, dynamodb: Any = None) -> MerchantTable:
    """Read the whole table at ``path`` (a file, or ``dynamodb://<table>``) in this process,
    logging the rows skipped.

    :arg dynamodb: a DynamoDB client to use (built from ``aws`` settings when None).
    :raises MerchantReadError: the source cannot be read; the message names it.
    """
    table, skipped, first_bad = read_merchants_counted(path, settings, dynamodb)
    report_skipped(path, skipped, first_bad)
    return table


def read_merchants_counted(
    path: str, settings: Settings, dynamodb: Any = None
) -> tuple[MerchantTable, int, Optional[str]]:
    """:func:`read_merchants` without the log line: (table, rows skipped, position of the first),
    so that a child process (connectors/reference/child.py) can hand the count to the flow's
    process, which logs it.

    :raises MerchantReadError: the source cannot be read; the message names it.
    """
    counted = _Counted(path)
    try:
        if path.startswith(DYNAMODB_SCHEME):
            from botocore.exceptions import BotoCoreError, ClientError

            if dynamodb is None:
                from connectors.aws.client import aws_client

                dynamodb = aws_client("dynamodb", settings, sink=False)
            try:
                table = MerchantTable(counted.rows(_dynamodb_records(dynamodb, path[len(DYNAMODB_SCHEME) :])))
            except (BotoCoreError, ClientError) as exc:
                raise MerchantReadError(f"merchant table {path}: {exc}") from None
        else:
            table = MerchantTable(counted.rows(file_records(path)))
    except OSError as exc:
        raise MerchantReadError(f"merchant table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise MerchantReadError(f"merchant table {path}: not UTF-8 text ({exc.reason})") from None
    return table, counted.skipped, counted.first_bad


def report_skipped(source: str, skipped: int, first_bad: Optional[str]) -> None:
    """One log line for the invalid rows of one load (none when every row was valid)."""
    if skipped:
        logger.warning(
            "merchant table %s: skipped %d invalid rows (first at %s); rows need merchant_id, "
            "active as a boolean and max_transaction_amount >= 0 or empty",
            source,
            skipped,
            first_bad,
        )
