"""Merchant reference data: the table, its readers, the per-chunk join and points, refreshes in a running flow."""

from __future__ import annotations

import glob
import json
import uuid

import boto3
import orjson
import pytest
import yaml

from cli.merchants import main as merchants_main
from cli.provision import Provisioner
from config import load_settings
from connectors.reference.loader import ReferenceLoader
from connectors.reference.merchants import MerchantReadError, read_merchants
from observability.registry import REGISTRY
from operators.parse import ChunkParser
from operators.reference.live import LiveReference, ReferenceHolder
from operators.reference.merchants import NOT_CONFIGURED, MerchantTable
from tests.support.config import QUIET_STDOUT
from tests.support.events import T0, chunk, event
from tests.support.flow import run_in_process
from tests.support.reference_helpers import StepSource, wait_for

ROWS = [
    ("m_ok", "Corner Shop", True, 500.0),
    ("m_off", "Closed Ltd", False, None),
    ("m_test", "Test Merchant", True, None),
]


def _parse(table: MerchantTable, events: list[dict], **fraud) -> tuple[list[dict], list[dict]]:
    settings = load_settings(environ={}, overrides={"rules": {"fraud": fraud}} if fraud else None)
    parser = ChunkParser(settings, reference=ReferenceHolder(LiveReference.of(settings.rules, table)))
    _, out = parser.parse(None, chunk(events))
    return [orjson.loads(x) for x in out.transactions.splitlines()], out.alerts


def test_table_slots_statuses_and_the_sentinel():
    table = MerchantTable([*ROWS, ("m_ok", "Corner Shop", False, 10.0)])  # a repeated id keeps its last row
    assert len(table) == 3
    assert table.slots(["m_off", "nope", None]).tolist() == [1, 3, 3]
    assert [table.status_of(m) for m in ("m_ok", "m_test", "nope", None)] == [
        "inactive",
        "active",
        "unknown",
        "unknown",
    ]
    assert NOT_CONFIGURED.status_of("m_ok") == "not_loaded"


def test_statuses_points_and_limits_on_every_transaction():
    events = [
        event("a", T0, amount=50.0, merchant_id="m_ok"),
        event("b", T0, amount=600.0, merchant_id="m_ok"),  # over its 500 limit: +30
        event("c", T0, amount=50.0, merchant_id="m_off"),  # inactive: +50
        event("d", T0, amount=50.0, merchant_id="m_new"),  # unknown: +0 by default
        event("e", T0, amount=50.0),  # no merchant_id: unknown
        event("f", T0, amount=50.0, merchant_id="m_test", merchant=None),  # the table's name: "Test" +40
    ]
    records, alerts = _parse(MerchantTable(ROWS), events)
    got = {r["transaction_id"]: (r["merchant_status"], r["over_merchant_limit"], r["fraud_status"]) for r in records}
    assert got == {
        "a": ("active", False, "APPROVED"),
        "b": ("active", True, "REVIEW_REQUIRED"),
        "c": ("inactive", False, "FRAUD_SUSPECTED"),
        "d": ("unknown", False, "APPROVED"),
        "e": ("unknown", False, "APPROVED"),
        "f": ("active", False, "REVIEW_REQUIRED"),
    }
    assert [r["fraud_score"] for r in records] == [0, 30, 50, 0, 0, 40]
    [alert] = alerts
    assert alert["transaction_id"] == "c" and alert["details"]["merchant_status"] == "inactive"
    assert {r["rules_version"] for r in records} == {alert["rules_version"]}


def test_no_table_means_not_loaded_and_never_over_a_limit():
    records, _ = _parse(NOT_CONFIGURED, [event("a", T0, amount=9e9, merchant_id="m_ok")])
    assert (records[0]["merchant_status"], records[0]["over_merchant_limit"]) == ("not_loaded", False)


def test_points_are_rules():
    events = [event("d", T0, amount=50.0, merchant_id="m_new"), event("c", T0, merchant_id="m_off")]
    records, _ = _parse(MerchantTable(ROWS), events, unknown_merchant_points=35, inactive_merchant_points=5)
    assert [(r["fraud_score"], r["fraud_status"]) for r in records] == [(35, "REVIEW_REQUIRED"), (5, "APPROVED")]


def test_flagged_records_carry_the_merchant_fields():
    settings = load_settings(environ={})
    parser = ChunkParser(settings, reference=ReferenceHolder(LiveReference.of(settings.rules, MerchantTable(ROWS))))
    _, out = parser.parse(None, chunk([event("b", T0, amount=600.0, merchant_id="m_ok")]))
    [flagged] = out.flagged
    assert (flagged["merchant_status"], flagged["over_merchant_limit"]) == ("active", True)
    assert flagged["rules_version"]


def test_jsonl_and_csv_files_and_bad_rows(tmp_path):
    jsonl = tmp_path / "merchants.jsonl"
    jsonl.write_bytes(
        b'{"merchant_id": "m_ok", "name": "Corner Shop", "active": true, "max_transaction_amount": 500}\n'
        b'{"merchant_id": "m_off", "name": "Closed Ltd", "active": false}\n'
        b"\n"
        b'{"merchant_id": "", "active": true}\n'
        b'{"merchant_id": "m_bad", "active": "maybe"}\n'
        b"not json\n"
    )
    csv = tmp_path / "merchants.csv"
    csv.write_text(
        "merchant_id,name,active,max_transaction_amount\nm_ok,Corner Shop,true,500\nm_off,Closed Ltd,false,\n"
        "m_neg,Bad,true,-5\n"
    )
    settings = load_settings(environ={})
    for path in (jsonl, csv):
        table = read_merchants(str(path), settings)
        assert len(table) == 2
        assert (table.status_of("m_ok"), table.status_of("m_off"), table.status_of("m_bad")) == (
            "active",
            "inactive",
            "unknown",
        )
        assert table.limit_of("m_ok") == 500.0
    try:
        read_merchants(str(tmp_path / "absent.jsonl"), settings)
    except MerchantReadError as exc:
        assert "absent.jsonl" in str(exc)
    else:
        raise AssertionError("a missing file must fail the read")


def _write_table(path, active: bool) -> None:
    path.write_bytes(
        orjson.dumps({"merchant_id": "m_1", "name": "Corner Shop", "active": active, "max_transaction_amount": 900})
        + b"\n"
        + orjson.dumps({"merchant_id": "m_2", "name": "Other", "active": True})
        + b"\n"
    )


def _transactions(out_dir) -> dict[str, dict]:
    records = {}
    for name in glob.glob(str(out_dir / "transactions*.jsonl")):
        with open(name, "rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                records[record["transaction_id"]] = record
    return records


def _run_refreshing(settings, loader: ReferenceLoader, steps: list, out_dir) -> dict[str, dict]:
    """``steps`` (chunks, and calls that change the table between them) through the flow while
    ``loader`` refreshes the merchant table; the transactions written, by id."""
    try:
        run_in_process(settings, source=StepSource(steps), reference=loader)
    finally:
        loader.stop()
    return _transactions(out_dir)


@pytest.mark.integration  # every read of the table runs in a child process
def test_a_refresh_deactivates_a_merchant_while_the_flow_runs(tmp_path):
    table = tmp_path / "merchants.jsonl"
    _write_table(table, active=True)
    out = tmp_path / "out"
    settings = load_settings(
        environ={},
        overrides={
            "reference": {"merchants": {"path": str(table), "refresh_seconds": 0.1}},
            "sinks": {"jsonl": {"dir": str(out)}, "stdout": QUIET_STDOUT},
        },
    )
    loader = ReferenceLoader(settings)
    failures_before = REGISTRY.get_sample_value("paywatch_reference_load_failures_total") or 0.0

    def deactivate() -> None:
        _write_table(table, active=False)
        wait_for(lambda: loader.holder.current.merchants.status_of("m_1") == "inactive", "the refreshed table")

    def break_the_file() -> None:
        table.unlink()
        wait_for(
            lambda: (REGISTRY.get_sample_value("paywatch_reference_load_failures_total") or 0.0) > failures_before,
            "a failed read",
        )

    steps = [
        chunk([event("before", T0, merchant_id="m_1", amount=100.0)]),
        deactivate,
        chunk([event("after", T0 + 1, merchant_id="m_1", amount=100.0)]),
        break_the_file,
        chunk([event("kept", T0 + 2, merchant_id="m_1", amount=1000.0)], done=True),
    ]
    records = _run_refreshing(settings, loader, steps, out)
    assert records["before"]["merchant_status"] == "active"
    assert records["before"]["fraud_status"] == "APPROVED"
    assert records["after"]["merchant_status"] == "inactive"
    assert records["after"]["fraud_status"] == "FRAUD_SUSPECTED"
    # The file is gone: the last good copy (inactive, limit 900) stays in force.
    assert (records["kept"]["merchant_status"], records["kept"]["over_merchant_limit"]) == ("inactive", True)


@pytest.mark.integration
def test_dynamodb_table_provisioned_loaded_and_refreshed_while_the_flow_runs(moto, tmp_path, monkeypatch, capsys):
    tag = uuid.uuid4().hex[:8]
    config = {
        "aws": {"endpoint_url": moto.url, "region": "us-east-1"},
        "source": {"kinesis": {"stream_name": f"payments-{tag}"}},
        "sinks": {
            "jsonl": {"dir": str(tmp_path / "out")},
            "stdout": QUIET_STDOUT,
            "sns": {"topic_name": f"alerts-{tag}"},
            "dynamodb": {
                "transactions_table": f"txn-{tag}",
                "alerts_table": f"alerts-{tag}",
                "aggregates_table": f"aggs-{tag}",
            },
        },
        "reference": {"merchants": {"path": f"dynamodb://merchants-{tag}", "refresh_seconds": 0.2}},
    }
    config_path = tmp_path / "paywatch.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PAYWATCH_CONFIG", str(config_path))
    settings = load_settings()

    # provision up: the merchant table, on-demand and encrypted; down keeps it.
    result = Provisioner(settings, wait_seconds=10).up()
    assert f"merchants-{tag}" in result["tables"]
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto.url)
    described = dynamodb.describe_table(TableName=f"merchants-{tag}")["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["SSEDescription"]["Status"] in ("ENABLED", "ENABLING")
    assert described["KeySchema"] == [{"AttributeName": "merchant_id", "KeyType": "HASH"}]

    # The load command: a CSV file into the table.
    merchants_csv = tmp_path / "merchants.csv"
    merchants_csv.write_text(
        "merchant_id,name,active,max_transaction_amount\nm_1,Corner Shop,true,900\nm_2,,no,\nbad\n"
    )
    assert merchants_main(["load", str(merchants_csv)]) == 0
    assert json.loads(capsys.readouterr().out) == {"table": f"merchants-{tag}", "written": 2, "skipped": 1}

    loader = ReferenceLoader(settings)

    def deactivate() -> None:
        dynamodb.update_item(
            TableName=f"merchants-{tag}",
            Key={"merchant_id": {"S": "m_1"}},
            UpdateExpression="SET active = :f",
            ExpressionAttributeValues={":f": {"BOOL": False}},
        )
        wait_for(lambda: loader.holder.current.merchants.status_of("m_1") == "inactive", "the refreshed table")

    steps = [
        chunk([event("before", T0, merchant_id="m_1", amount=100.0), event("two", T0, merchant_id="m_2")]),
        deactivate,
        chunk([event("after", T0 + 1, merchant_id="m_1", amount=1000.0)], done=True),
    ]
    records = _run_refreshing(settings, loader, steps, tmp_path / "out")
    assert (records["before"]["merchant_status"], records["before"]["fraud_status"]) == ("active", "APPROVED")
    assert (records["two"]["merchant_status"], records["two"]["fraud_status"]) == ("inactive", "FRAUD_SUSPECTED")
    assert records["after"]["merchant_status"] == "inactive"
    assert records["after"]["over_merchant_limit"] is True
    assert records["after"]["fraud_score"] == 50 + 30 + 10  # inactive, over 900, round 1,000

    Provisioner(settings, wait_seconds=10).down()
    assert dynamodb.describe_table(TableName=f"merchants-{tag}")["Table"]["TableName"] == f"merchants-{tag}"


def test_the_hash_index_finds_every_merchant_of_a_large_table_and_nothing_else():
    rows = [(f"m{i}", None, i % 3 != 0, float(i)) for i in range(50_000)]
    table = MerchantTable(rows)
    ids = [f"m{i}" for i in range(0, 50_000, 7)] + [f"absent{i}" for i in range(5_000)] + [None]
    slots = table.slots(ids).tolist()
    assert slots[: len(ids) - 5_001] == [i for i in range(0, 50_000, 7)]
    assert set(slots[len(ids) - 5_001 :]) == {table.sentinel}
    assert table.limit_of("m49999") == 49999.0 and table.status_of("m3") == "inactive"


def test_table_names_are_judged_against_the_words_once_per_version():
    table = MerchantTable(
        [("a", "Corner Shop", True, None), ("b", "FAKE goods", True, None), ("c", None, True, None)]
        + [("d", "İstanbul Test Bazaar", True, None)]  # lower() lengthens İ: the name-by-name path
    )
    assert table.suspicious_names(["fake", "test"]).tolist() == [0, 1, 0, 1, 0]
    plain = MerchantTable([("a", "Corner Shop", True, None), ("b", "dummy corner", True, None)])
    assert plain.suspicious_names(["corner"]).tolist() == [1, 1, 0]
    assert plain.suspicious_names(["dummy"]).tolist() == [0, 1, 0]
