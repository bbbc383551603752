"""The one boto3 client factory and the one list of AWS error codes, as every caller uses them."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from cli.producer import _BACKOFF as PRODUCER_BACKOFF
from config import load_settings
from config.settings import AwsSettings
from connectors.aws.client import PROVISION, ClientProfile, aws_client, make_client, sink_profile
from connectors.aws.retry import NOT_FOUND_CODES, TRANSIENT_CODES, classify, error_code
from connectors.kinesis.source import _CONTROL, _READER


def _config(client) -> dict:
    config = client.meta.config
    return {
        "attempts": config.retries["total_max_attempts"],
        "connect": config.connect_timeout,
        "read": config.read_timeout,
        "pool": config.max_pool_connections,
    }


def test_a_client_goes_to_the_configured_region_and_endpoint():
    aws = AwsSettings(region="eu-west-1", endpoint_url="http://127.0.0.1:5999")
    client = make_client(
        "sqs", aws, ClientProfile(attempts=3, connect_timeout=2, read_timeout=7, max_pool_connections=2)
    )
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert _config(client) == {"attempts": 3, "connect": 2, "read": 7, "pool": 2}


def test_sink_clients_never_retry_inside_botocore_and_obey_the_request_timeout(monkeypatch):
    monkeypatch.setenv("PAYWATCH__SINKS__RETRY__REQUEST_TIMEOUT_SECONDS", "3")
    settings = load_settings()
    assert _config(aws_client("dynamodb", settings)) == {"attempts": 1, "connect": 3, "read": 3, "pool": 4}
    assert sink_profile(30).connect_timeout == 5.0  # connecting never waits as long as a slow answer may
    assert _config(aws_client("sns", settings, sink=False))["attempts"] == PROVISION.attempts == 6


def test_the_kinesis_reader_leaves_retries_to_the_source():
    assert _READER.attempts == 1
    assert _CONTROL.attempts > 1


@pytest.mark.parametrize("code", sorted(NOT_FOUND_CODES))
def test_every_not_found_code_is_permanent_and_says_how_to_create_the_resource(code):
    failure = classify(ClientError({"Error": {"Code": code, "Message": "no"}}, "Op"))
    assert not failure.transient
    assert "provision up" in failure.describe("table x", "sinks.dynamodb.table_prefix")


@pytest.mark.parametrize(
    "code", ["LimitExceededException", "ProvisionedThroughputExceededException", "ThrottlingException"]
)
def test_the_kinesis_throttling_codes_are_in_the_shared_list(code):
    assert code in TRANSIENT_CODES
    assert classify(ClientError({"Error": {"Code": code}}, "GetRecords")).transient


def test_error_code_tolerates_a_response_without_an_error():
    assert error_code(ClientError({}, "Op")) == ""
    assert error_code(ClientError({"Error": {"Code": "Throttling"}}, "Op")) == "Throttling"


def test_the_producer_backs_off_with_the_shared_backoff():
    delays = [PRODUCER_BACKOFF.delay(attempt) for attempt in range(1, 12)]
    assert 0.05 <= delays[0] <= 0.1
    assert max(delays) <= 5.0
    assert delays[-1] >= 2.5
