"""Retry policy shared by every AWS caller: backoff with jitter and error classes.

The sinks, the Kinesis source, the producer and the provisioning command all
take their error codes and their backoff from here, so a code added once
(a new throttling spelling) is handled the same way everywhere.

Why a module of its own: every AWS sink must answer the same two questions
the same way. *Is this error worth retrying?* Throttling, 5xx and a refused
connection go away by themselves, so the records wait and are sent again.
A missing table, a denied permission or an invalid record never go away,
so retrying only hides them: those are *permanent*, logged once with the fix
and sent to the dead-letter output. *How long to wait?* Exponential backoff
with jitter, so that many workers hitting the same throttled API do not
retry in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

#: Error codes that clear up by themselves: throttling, capacity, server side.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
        "KMSThrottlingException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        # Kinesis (GetShardIterator, ListShards) and DynamoDB control calls: a rate, not a quota.
        "LimitExceededException",
        # Temporary credentials are refreshed by the default chain; the next try works.
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)

#: Error codes that say the resource does not exist (provisioning treats them as "already gone").
NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "ResourceNotFound",
        "NotFound",
        "NotFoundException",
        "NonExistentQueue",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "TableNotFoundException",
        "EntityNotFoundException",
        "NoSuchBucket",
        "404",
    }
)

#: Error codes that are permanent even though the HTTP status says 5xx.
_PERMANENT_OVERRIDES = frozenset({"KMSDisabledException", "KMSInvalidStateException"})

_MISSING = "the {resource} does not exist: create it with `python -m cli.provision up` or fix {setting}"
_DENIED = (
    "the credentials from the default AWS chain may not do this on {resource}: grant the IAM "
    "role the action named in the message"
)
_INVALID = "AWS rejected the request as invalid; the record is in the dead-letter output with the message"
_BAD_CREDENTIALS = "the AWS credentials are not valid: check the default credential chain (env, profile, IRSA)"

#: The fix to print, by error code; ``{resource}`` and ``{setting}`` are filled by the sink.
FIXES = {
    **dict.fromkeys(NOT_FOUND_CODES, _MISSING),
    "AccessDenied": _DENIED,
    "AccessDeniedException": _DENIED,
    "AuthorizationError": _DENIED,
    "UnauthorizedOperation": _DENIED,
    "KMSAccessDeniedException": "allow the IAM role to use the KMS key of {resource}",
    "KMSDisabledException": "the KMS key of {resource} is disabled: enable it or change the key",
    "InvalidClientTokenId": _BAD_CREDENTIALS,
    "UnrecognizedClientException": _BAD_CREDENTIALS,
    "SignatureDoesNotMatch": "the AWS secret key does not match: check the default credential chain",
    "NoCredentials": "no AWS credentials found: provide them through the default chain (env, profile, IRSA on EKS)",
    "NoRegion": "no AWS region: set aws.region",
    "ValidationException": _INVALID,
    "ValidationError": _INVALID,
    "InvalidParameterValue": _INVALID,
    "InvalidParameterValueException": _INVALID,
    "InvalidParameter": _INVALID,
    "InvalidParameterException": _INVALID,
    "InvalidParameterCombination": _INVALID,
    "MissingParameter": _INVALID,
    "ParamValidation": _INVALID,
    "SerializationException": _INVALID,
}


def error_code(exc: ClientError) -> str:
    """The AWS error code of a botocore ``ClientError`` (empty when the response has none)."""
    return str((exc.response.get("Error") or {}).get("Code") or "")


@dataclass(frozen=True)
class Failure:
    """What went wrong, in the terms a sink acts on."""

    transient: bool
    code: str
    message: str
    fix: str = ""

    def describe(self, resource: str = "resource", setting: str = "the sink settings") -> str:
        fix = self.fix.format(resource=resource, setting=setting) if self.fix else ""
        return f"{self.code}: {self.message}" + (f" -- fix: {fix}" if fix else "")


def classify(exc: BaseException) -> Failure:
    """Sort an exception raised by a boto3 call into transient or permanent.

    Unknown AWS codes follow the HTTP status (429 and 5xx transient, other
    4xx permanent); an exception that is not from botocore at all (a bug in
    converting a record) is permanent, so the record reaches the dead-letter
    output instead of being retried forever.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        if code in _PERMANENT_OVERRIDES:
            transient = False
        else:
            transient = code in TRANSIENT_CODES or status == 429 or status >= 500
        return Failure(transient, code, message, FIXES.get(code, "") if not transient else "")
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return Failure(True, type(exc).__name__, str(exc))
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Failure(False, "NoCredentials", str(exc), FIXES["NoCredentials"])
    if isinstance(exc, NoRegionError):
        return Failure(False, "NoRegion", str(exc), FIXES["NoRegion"])
    if isinstance(exc, ParamValidationError):
        return Failure(False, "ParamValidation", str(exc), FIXES["ParamValidation"])
    if isinstance(exc, BotoCoreError):
        return Failure(False, type(exc).__name__, str(exc))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Failure(True, type(exc).__name__, str(exc))
    return Failure(False, type(exc).__name__, str(exc) or repr(exc))


def record_failure(code: str, message: str, sender_fault: Optional[bool]) -> Failure:
    """A per-record failure inside a successful response (SNS PublishBatch ``Failed``).

    ``sender_fault`` False means the service failed, which is worth a retry.
    """
    transient = code in TRANSIENT_CODES or sender_fault is False
    return Failure(transient, code, message, "" if transient else FIXES.get(code, _INVALID))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter".

    The n-th retry waits between half and all of ``min(cap, base * 2**n)``:
    the delay still grows (full jitter can draw ~0 again and again against a
    throttled API), and workers spread out instead of retrying together.
    """

    base: float = 0.2
    cap: float = 20.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = first retry)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, min(attempt - 1, 62))))
        draw = (rng or random).random()
        return ceiling / 2 + draw * ceiling / 2
