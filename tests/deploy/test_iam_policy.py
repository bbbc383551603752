"""k8s/iam-policy.json grants exactly the AWS actions the running flow calls.

The actions are derived from the code: every boto3 operation called in
connectors/ (the provisioning and producer tools excepted: they run with
an operator's credentials, not the pod's role) maps to its IAM action. A new
call without a policy line, or a policy line nothing calls, fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "k8s" / "iam-policy.json"
#: Tools run by an operator, not by the pods.
NOT_IN_THE_POD = {"provision.py", "producer.py"}
#: service -> IAM prefix (CloudWatch signs as "monitoring" but IAM says "cloudwatch").
SERVICES = {
    "kinesis": "kinesis",
    "cloudwatch": "cloudwatch",
    "sns": "sns",
    "sqs": "sqs",
    "dynamodb": "dynamodb",
    "sts": "sts",
    "s3": "s3",
}
#: Batch APIs authorised by the single-item action; calls that need no permission.
IAM_ACTION = {
    "sns:PublishBatch": "sns:Publish",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sts:GetCallerIdentity": None,
    # S3's API names differ from its IAM actions.
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:DeleteObjects": "s3:DeleteObject",
}


#: A call on a boto3 client: ``client.x(``, ``self._client.x(``, ``self._control.x(``, ``sts.x(``.
_CALL = re.compile(r"(?:client|_control|sts)\.([a-z][a-z0-9_]*)\(")


def _operations() -> dict[str, str]:
    """boto3 method name -> IAM action, for the services the flow uses."""
    session = botocore.session.get_session()
    table: dict[str, str] = {}
    for service, prefix in SERVICES.items():
        for op in session.get_service_model(service).operation_names:
            table[xform_name(op)] = f"{prefix}:{op}"
    return table


def called_actions() -> set[str]:
    table = _operations()
    actions: set[str] = set()
    for path in sorted((ROOT / "connectors").rglob("*.py")):
        if path.name in NOT_IN_THE_POD:
            continue
        for method in _CALL.findall(path.read_text()):
            action = table.get(method)
            if action is not None:
                action = IAM_ACTION.get(action, action)
                if action:
                    actions.add(action)
    return actions


def policy_actions() -> dict[str, set[str]]:
    doc = json.loads(POLICY.read_text())
    assert doc["Version"] == "2012-10-17"
    out: dict[str, set[str]] = {}
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"]
        actions = statement["Action"]
        assert all("*" not in a for a in actions), "no wildcard actions"
        out[statement["Sid"]] = set(actions)
    return out


def test_policy_grants_exactly_the_aws_actions_the_flow_calls():
    called = called_actions()
    assert {"kinesis:GetRecords", "cloudwatch:PutMetricData", "dynamodb:BatchWriteItem"} <= called
    granted = set().union(*policy_actions().values())
    assert {a for a in granted if not a.startswith("kafka-cluster:")} == called


def test_msk_iam_statements_follow_the_kafka_settings():
    kafka_config = (ROOT / "connectors" / "kafka" / "client_config.py").read_text()
    statements = policy_actions()
    if "AWS_MSK_IAM" in kafka_config:
        assert statements["MskIamSourceRead"] == {
            "kafka-cluster:Connect",
            "kafka-cluster:DescribeTopic",
            "kafka-cluster:ReadData",
        }
        assert "kafka-cluster:WriteData" in statements["MskIamDeadLetterWrite"]
    else:
        assert not any(sid.startswith("Msk") for sid in statements)
