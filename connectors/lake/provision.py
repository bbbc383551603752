"""Provisioning of the lake (called by ``python -m cli.provision up|down``).

``up`` (idempotent, converges): the bucket of ``sinks.lake.uri`` with default
encryption (SSE-S3, or SSE-KMS with ``kms_key_id`` and an S3 bucket key),
every public access blocked, a lifecycle rule moving ``raw/`` objects to
STANDARD_IA after ``raw_infrequent_access_days`` (and aborting stray multipart
uploads after 7 days), and the Glue database ``glue_database`` with one table
per zone, partition-projected (see :mod:`connectors.lake.catalog`).

``down`` deletes the Glue tables and database, and the bucket only if it is
empty: a data lake holds the audit trail, so ``down`` never deletes data; it
reports a non-empty bucket as kept.

Run by an operator with provisioning credentials, not by the pods (the IAM
policy of the pods grants only ``s3:PutObject``/``s3:DeleteObject`` on the lake prefix
and ``s3:ListBucket`` on its raw keys).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from botocore.exceptions import ClientError

from config.settings import Settings
from connectors.aws.retry import NOT_FOUND_CODES, error_code
from connectors.lake.catalog import table_input
from connectors.lake.layout import RAW, parse_uri

logger = logging.getLogger(__name__)

_EXISTS = {"BucketAlreadyOwnedByYou", "AlreadyExistsException"}


class LakeProvisioner:
    """The lake's bucket and Glue catalog; does nothing when the URI is not on S3."""

    def __init__(self, settings: Settings, s3: Any, glue: Any) -> None:
        self.settings = settings
        self.lake = settings.sinks.lake
        self.s3 = s3
        self.glue = glue
        location = parse_uri(self.lake.uri) if self.lake.uri else None
        self.bucket: Optional[str] = location.bucket if location is not None else None
        self.prefix = location.prefix if location is not None else ""

    def up(self) -> Optional[dict[str, Any]]:
        if self.bucket is None:
            return None
        self._bucket_up()
        self._encryption_up()
        self.s3.put_public_access_block(
            Bucket=self.bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        raw_prefix = f"{self.prefix}/{RAW}/" if self.prefix else f"{RAW}/"
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "paywatch-raw-infrequent-access",
                        "Filter": {"Prefix": raw_prefix},
                        "Status": "Enabled",
                        "Transitions": [{"Days": self.lake.raw_infrequent_access_days, "StorageClass": "STANDARD_IA"}],
                    },
                    {
                        "ID": "paywatch-abort-incomplete-uploads",
                        "Filter": {"Prefix": self.prefix},
                        "Status": "Enabled",
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    },
                ]
            },
        )
        tables = self._catalog_up()
        return {"bucket": self.bucket, "database": self.lake.glue_database, "tables": tables}

    def _bucket_up(self) -> None:
        region = self.settings.aws.region
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.s3.create_bucket(**kwargs)
            logger.info("created S3 bucket %s", self.bucket)
        except ClientError as exc:
            if error_code(exc) not in _EXISTS:
                raise

    def _encryption_up(self) -> None:
        if self.lake.encryption == "SSE-KMS":
            default: dict[str, Any] = {"SSEAlgorithm": "aws:kms"}
            if self.lake.kms_key_id:
                default["KMSMasterKeyID"] = self.lake.kms_key_id
            rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}
        else:
            rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        self.s3.put_bucket_encryption(Bucket=self.bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})

    def _catalog_up(self) -> list[str]:
        database = self.lake.glue_database
        try:
            self.glue.create_database(DatabaseInput={"Name": database, "Description": "Paywatch data lake"})
        except ClientError as exc:
            if error_code(exc) not in _EXISTS:
                raise
        names = []
        for zone in self.lake.zones:
            spec = table_input(zone, str(self.bucket), self.prefix)
            try:
                self.glue.create_table(DatabaseName=database, TableInput=spec)
            except ClientError as exc:
                if error_code(exc) not in _EXISTS:
                    raise
                self.glue.update_table(DatabaseName=database, TableInput=spec)
            names.append(spec["Name"])
        return names

    def down(self) -> Optional[dict[str, Any]]:
        if self.bucket is None:
            return None
        database = self.lake.glue_database
        for zone in self.lake.zones:
            self._ignore_gone(self.glue.delete_table, DatabaseName=database, Name=zone)
        self._ignore_gone(self.glue.delete_database, Name=database)
        try:
            listing = self.s3.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return {"bucket": None, "database": database}
            raise
        if listing.get("KeyCount", 0):
            logger.warning("kept S3 bucket %s: it holds lake data (delete it yourself if you mean it)", self.bucket)
            return {"bucket_kept": self.bucket, "database": database}
        self.s3.delete_bucket(Bucket=self.bucket)
        return {"bucket": self.bucket, "database": database}

    @staticmethod
    def _ignore_gone(call: Any, **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND_CODES:
                raise
