"""``python -m cli.merchants load FILE``: fill the DynamoDB merchant table from a JSONL or CSV file.

The flow reads merchants from ``reference.merchants.path``; when that is
``dynamodb://<table>`` (created by ``python -m cli.provision up``), this
command writes a file's rows into it (``--table`` names another table). Rows
are validated as the flow validates them (connectors/reference/merchants.py):
invalid ones are skipped and counted. Writes go through BatchWriteItem in 25s
with unprocessed items retried (boto3's batch writer), and overwrite by
``merchant_id``, so loading the same file twice is harmless; merchants absent
from the file are left as they are.

    python -m cli.merchants load merchants.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from decimal import Decimal
from typing import Any, Optional

from cli.tool_settings import load_tool_settings
from config.settings import Settings
from connectors.reference.merchants import DYNAMODB_SCHEME, file_records, to_row

logger = logging.getLogger(__name__)


def item_of(row: tuple[str, Optional[str], bool, Optional[float]]) -> dict[str, Any]:
    """A merchant row as a DynamoDB item (resource format: numbers as Decimal)."""
    merchant_id, name, active, limit = row
    item: dict[str, Any] = {"merchant_id": merchant_id, "active": active}
    if name is not None:
        item["name"] = name
    if limit is not None:
        item["max_transaction_amount"] = Decimal(repr(limit))
    return item


def load_file(path: str, table: str, settings: Settings, resource: Any = None) -> dict[str, Any]:
    """Write every valid row of ``path`` into ``table``; returns counts."""
    if resource is None:
        import boto3

        resource = boto3.session.Session(region_name=settings.aws.region).resource(
            "dynamodb", endpoint_url=settings.aws.endpoint_url
        )
    written = skipped = 0
    with resource.Table(table).batch_writer(overwrite_by_pkeys=["merchant_id"]) as batch:
        for _where, record in file_records(path):
            row = to_row(record)
            if row is None:
                skipped += 1
                continue
            batch.put_item(Item=item_of(row))
            written += 1
    return {"table": table, "written": written, "skipped": skipped}


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; prints the counts as JSON."""
    parser = argparse.ArgumentParser(prog="python -m cli.merchants", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    load = sub.add_parser("load", help="write a JSONL or CSV file of merchants into the DynamoDB table")
    load.add_argument("file", help="merchants as JSONL or CSV (by .csv suffix)")
    load.add_argument("--table", help="table name (default: reference.merchants.path's dynamodb://<table>)")
    args = parser.parse_args(argv)
    settings = load_tool_settings()
    if settings is None:
        return 2
    table = args.table
    path = settings.reference.merchants.path
    if table is None:
        if not path or not path.startswith(DYNAMODB_SCHEME):
            print("reference.merchants.path is not dynamodb://<table>: name the table with --table", file=sys.stderr)
            return 2
        table = path[len(DYNAMODB_SCHEME) :]
    try:
        result = load_file(args.file, table, settings)
    except OSError as exc:
        print(f"{args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
