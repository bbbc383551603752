"""Typed settings: the single place where names, types and limits are checked.

Every section forbids unknown keys so that a typo (``simulator.ratee``) stops
the start instead of silently running on a default.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSourceSettings(_Section):
    """Kafka source (and producer target). Secrets never live here: the
    ``*_password_env`` keys name environment variables that hold them."""

    client: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    topic: str | list[str] = "payments"
    starting_offset: Literal["earliest", "latest"] = "earliest"
    bounded: bool = False
    client_id: str = "paywatch"
    fetch_max_wait_ms: int = Field(100, ge=0, le=60_000)
    max_partition_fetch_bytes: int = Field(4 * 1024 * 1024, gt=0)
    # Both clients read the same records: kafka-python's own default is
    # read_uncommitted, librdkafka's read_committed.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    ssl_password_env: Optional[str] = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"]] = None
    sasl_username: Optional[str] = None
    sasl_password_env: Optional[str] = None

    @property
    def topics(self) -> list[str]:
        return [self.topic] if isinstance(self.topic, str) else list(self.topic)

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSourceSettings:
        if not self.topics or any(not t for t in self.topics):
            raise ValueError("topic must name at least one non-empty topic")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism is not None and not sasl:
            raise ValueError("sasl_mechanism needs security_protocol SASL_SSL or SASL_PLAINTEXT")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.sasl_username and self.sasl_password_env
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password_env")
        if self.client == "confluent-kafka" and self.sasl_mechanism == "AWS_MSK_IAM":
            raise ValueError("sasl_mechanism AWS_MSK_IAM needs client kafka-python (librdkafka has no MSK IAM signer)")
        return self


class KinesisSourceSettings(_Section):
    """Kinesis source (and producer target); region/endpoint come from ``aws``."""

    stream_name: str = Field("payment-events-stream", min_length=1)
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    starting_timestamp: Optional[datetime] = None
    bounded: bool = False
    min_poll_interval_seconds: float = Field(0.2, ge=0)
    idle_poll_interval_seconds: float = Field(1.0, ge=0)
    max_backoff_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _timestamp_when_needed(self) -> KinesisSourceSettings:
        if self.starting_position == "AT_TIMESTAMP":
            if self.starting_timestamp is None:
                raise ValueError("starting_position AT_TIMESTAMP needs starting_timestamp")
            if self.starting_timestamp.tzinfo is None:
                raise ValueError("starting_timestamp needs a UTC offset, e.g. 2025-07-09T19:00:00Z")
        return self


class SourceSettings(_Section):
    type: Literal["simulator", "file", "kafka", "kinesis"] = "simulator"
    path: str = "events.jsonl"
    batch_size: int = Field(1000, gt=0, le=100_000)
    max_batch_size: int = Field(20_000, gt=0, le=1_000_000)
    idle_partition_seconds: float = Field(30.0, gt=0)
    start_timeout_seconds: float = Field(25.0, gt=0, le=600)
    kafka: KafkaSourceSettings = KafkaSourceSettings()
    kinesis: KinesisSourceSettings = KinesisSourceSettings()

    @model_validator(mode="after")
    def _chunk_sizes(self) -> SourceSettings:
        if self.max_batch_size < self.batch_size:
            raise ValueError(
                f"max_batch_size: {self.max_batch_size} is below batch_size {self.batch_size} "
                "(chunks grow from batch_size up to max_batch_size while the source is behind)"
            )
        return self


# The simulator's scenario catalogue (connectors/simulator/scenarios.py) by
# name: settings validate against it without importing a connector, and
# tests/flow/test_simulator.py keeps the two lists equal.
SCENARIO_NAMES = frozenset(
    {
        "normal",
        "failure_spike",
        "traffic_drop",
        "velocity_attack",
        "amount_spike",
        "impossible_travel",
        "fraud_merchants",
        "out_of_order",
        "mixed",
        "hard",
        "mixed_hard",
        "region_incidents",
    }
)


class SimulatorSettings(_Section):
    scenario: str = "normal"
    events: int = Field(0, ge=0)
    rate: float = Field(1000.0, ge=0)
    seed: int = 1
    start: Optional[datetime] = None
    event_rate: Optional[float] = Field(None, gt=0)
    partitions: int = Field(1, gt=0, le=1024)
    users: int = Field(50_000, gt=0)
    regions: list[str] = Field(default_factory=lambda: ["US-EAST", "US-WEST", "EU-WEST", "AP-SOUTH"], min_length=1)

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIO_NAMES:
            raise ValueError(f"unknown scenario {value!r}; choose one of {sorted(SCENARIO_NAMES)}")
        return value

    @field_validator("start")
    @classmethod
    def _aware_start(cls, value: Optional[datetime]) -> Optional[datetime]:
        if value is not None and value.tzinfo is None:
            raise ValueError("start needs a UTC offset, e.g. 2025-07-09T19:00:00Z")
        return value

    @property
    def events_per_event_second(self) -> float:
        """Density of event time: how many events share one second of event time."""
        if self.event_rate is not None:
            return self.event_rate
        return self.rate if self.rate > 0 else 1000.0


class ValidationSettings(_Section):
    """The event contract's limits (``operators/events/contract.py``): values over a
    limit are dead-lettered naming the field, never truncated or clamped."""

    min_year: int = Field(2000, ge=1970, le=9999)
    max_year: int = Field(2100, ge=1970, le=9999)
    max_id_length: int = Field(128, gt=0, le=100_000)
    max_name_length: int = Field(256, gt=0, le=100_000)
    max_amount: float = Field(1e12, gt=0, le=2.0**53)
    max_future_seconds: float = Field(300.0, ge=0)
    max_event_bytes: int = Field(65_536, ge=256, le=350_000)

    @model_validator(mode="after")
    def _ordered_years(self) -> ValidationSettings:
        if self.min_year > self.max_year:
            raise ValueError("min_year must not be after max_year")
        return self


class EnrichmentSettings(_Section):
    high_value_amount: float = Field(1000.0, ge=0)
    medium_value_amount: float = Field(100.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> EnrichmentSettings:
        if self.medium_value_amount > self.high_value_amount:
            raise ValueError("medium_value_amount must not exceed high_value_amount")
        return self


class WindowSettings(_Section):
    allowed_lateness_seconds: float = Field(10.0, ge=0)
    max_skew_seconds: float = Field(600.0, gt=0)
    skew_confirm_events: int = Field(100, ge=1)


class FailureRateRule(_Section):
    """FAILURE_RATE incidents (docs/detection.md, "Failure rate").

    An incident opens when the lower Wilson bound of the window's failure
    rate at ``confidence`` is above ``threshold_percent`` (and the window
    holds ``min_events``); it resolves after ``resolve_windows`` consecutive
    windows at or under the threshold. ``explain_by`` names the event fields
    whose values may explain an incident (contributors); each second keeps
    the ``explain_max_values`` values per field with the most failures.
    """

    threshold_percent: float = Field(2.0, ge=0, le=100)
    window_seconds: int = Field(60, gt=0)
    hop_seconds: int = Field(10, gt=0)
    min_events: int = Field(30, ge=1)
    confidence: float = Field(0.999, ge=0.5, lt=1)
    resolve_windows: int = Field(6, ge=1)
    explain_by: list[str] = Field(default_factory=lambda: ["device", "merchant_id", "currency"], max_length=16)
    explain_max_values: int = Field(32, ge=1, le=10_000)
    explain_confidence: float = Field(0.999, ge=0.5, lt=1)
    explain_min_lift: float = Field(1.5, ge=1)

    @model_validator(mode="after")
    def _hop_divides_window(self) -> FailureRateRule:
        if self.hop_seconds > self.window_seconds or self.window_seconds % self.hop_seconds:
            raise ValueError("hop_seconds must divide window_seconds")
        return self

    @field_validator("explain_by")
    @classmethod
    def _distinct_fields(cls, names: list[str]) -> list[str]:
        if any(not n or not n.isidentifier() for n in names) or len(set(names)) != len(names):
            raise ValueError("explain_by must list distinct event field names (letters, digits, underscores)")
        if {"timestamp", "payment_status", "region", "transaction_id", "amount"} & set(names):
            raise ValueError("explain_by takes descriptive fields (device, merchant_id, ...), not timestamp/amount/ids")
        return names


class VelocityRule(_Section):
    window_seconds: float = Field(60.0, gt=0)
    max_count: int = Field(10, ge=1)
    max_amount: float = Field(10000.0, gt=0)
    cooldown_seconds: float = Field(60.0, ge=0)


class AmountSpikeRule(_Section):
    factor: float = Field(10.0, gt=1)
    min_history: int = Field(5, ge=1)
    history_size: int = Field(20, ge=1, le=1000)
    cooldown_seconds: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _history_holds_minimum(self) -> AmountSpikeRule:
        if self.history_size < self.min_history:
            raise ValueError("history_size must be at least min_history")
        return self


class ImpossibleTravelRule(_Section):
    window_seconds: float = Field(1800.0, gt=0)
    cooldown_seconds: float = Field(1800.0, ge=0)


class TrafficDropRule(_Section):
    enabled: bool = True
    fraction: float = Field(0.3, gt=0, lt=1)
    recover_fraction: float = Field(0.6, gt=0, le=1)
    baseline_windows: int = Field(30, ge=1)
    min_baseline: float = Field(100.0, ge=0)

    @model_validator(mode="after")
    def _recover_above_open(self) -> TrafficDropRule:
        if self.recover_fraction < self.fraction:
            raise ValueError("recover_fraction must be at least fraction")
        return self


class FraudRules(_Section):
    high_amount: float = Field(5000.0, ge=0)
    high_amount_points: int = 30
    merchant_words: list[str] = Field(default_factory=lambda: ["test", "fake", "dummy"])
    merchant_points: int = 40
    currencies: list[str] = Field(default_factory=lambda: ["USD", "EUR", "GBP"])
    currency_points: int = 20
    round_amount: float = Field(1000.0, gt=0)
    round_amount_points: int = 10
    suspected_score: int = 50
    review_score: int = 30
    # Merchant reference data (``reference.merchants``): points for a payment
    # to a merchant the table marks inactive, one above the merchant's
    # max_transaction_amount, and one to a merchant the table does not hold.
    inactive_merchant_points: int = 50
    over_limit_points: int = 30
    unknown_merchant_points: int = 0

    @field_validator("merchant_words")
    @classmethod
    def _lower_words(cls, words: list[str]) -> list[str]:
        if any(not w for w in words):
            raise ValueError("merchant words must be non-empty")
        return [w.lower() for w in words]

    @field_validator("currencies")
    @classmethod
    def _iso_currencies(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if len(code) != 3 or not code.isalpha():
                raise ValueError(f"{code!r} is not an ISO-4217 code")
        return [c.upper() for c in codes]

    @model_validator(mode="after")
    def _ordered_scores(self) -> FraudRules:
        if self.review_score > self.suspected_score:
            raise ValueError("review_score must not exceed suspected_score")
        return self


class RuleSettings(_Section):
    failure_rate: FailureRateRule = FailureRateRule()
    velocity: VelocityRule = VelocityRule()
    amount_spike: AmountSpikeRule = AmountSpikeRule()
    impossible_travel: ImpossibleTravelRule = ImpossibleTravelRule()
    traffic_drop: TrafficDropRule = TrafficDropRule()
    fraud: FraudRules = FraudRules()


# Rules that shape operator state: a live rules file may not change them
# (config/live_rules.py refuses such a reload with "restart needed").
RESTART_ONLY_RULES = (
    ("failure_rate", "window_seconds"),
    ("failure_rate", "hop_seconds"),
    # The parser counts these fields per chunk into window state.
    ("failure_rate", "explain_by"),
    ("velocity", "window_seconds"),
    ("impossible_travel", "window_seconds"),
    ("amount_spike", "history_size"),
)


class MerchantReferenceSettings(_Section):
    """The merchant configuration table (merchant_id, name, active,
    max_transaction_amount): a JSONL or CSV file, or ``dynamodb://<table>``."""

    path: Optional[str] = None
    refresh_seconds: float = Field(60.0, gt=0)

    @field_validator("path")
    @classmethod
    def _known_scheme(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        if not value:
            raise ValueError("path must be null, a file path or dynamodb://<table>")
        if value.startswith("dynamodb://"):
            table = value[len("dynamodb://") :]
            if not 3 <= len(table) <= 255 or not all(c.isalnum() or c in "_.-" for c in table):
                raise ValueError(
                    f"{value!r}: dynamodb://<table> needs a DynamoDB table name (3-255 of a-z A-Z 0-9 _ . -)"
                )
        elif "://" in value:
            raise ValueError(f"{value!r}: only files and dynamodb://<table> are supported")
        return value


class ReferenceSettings(_Section):
    merchants: MerchantReferenceSettings = MerchantReferenceSettings()


class UserSettings(_Section):
    idle_seconds: float = Field(3600.0, gt=0)
    max_users: int = Field(1_000_000, gt=0)
    shards: int = Field(64, gt=0, le=4096)
    # How far behind the slowest partition's newest event a user's event waits to be
    # judged in event-time order; None = windows.allowed_lateness_seconds.
    order_lateness_seconds: Optional[float] = Field(None, ge=0)
    max_held_events: int = Field(2_000_000, gt=0)


class StdoutSinkSettings(_Section):
    alerts: bool = True
    metrics: bool = True
    dead_letters: bool = True


class JsonlSinkSettings(_Section):
    dir: Optional[str] = None
    files: int = Field(1, gt=0, le=1024)


class SinkRetrySettings(_Section):
    """Failure handling shared by the AWS sinks (docs/sinks.md)."""

    base_seconds: float = Field(0.2, gt=0)
    max_seconds: float = Field(20.0, gt=0)
    max_buffer: int = Field(100_000, gt=0)
    block_seconds: float = Field(2.0, ge=0)
    close_timeout_seconds: float = Field(30.0, ge=0)
    request_timeout_seconds: float = Field(10.0, gt=0)
    linger_seconds: float = Field(0.2, ge=0, le=10)
    fail_on_error: bool = False


class CloudWatchSinkSettings(_Section):
    enabled: bool = False
    namespace: str = Field("PrimeDay2025", min_length=1, max_length=255)
    region_dimension: str = Field("Region", min_length=1, max_length=255)
    dimensions: dict[str, str] = Field(default_factory=dict)
    storage_resolution: Literal[1, 60] = 60
    max_datums_per_call: int = Field(1000, ge=1, le=1000)
    max_age_days: float = Field(14.0, gt=0, le=14)
    partitions: int = Field(1, ge=1, le=64)
    alarm_name: str = "HighPaymentFailureRate"
    alarm_threshold: float = Field(2.0, ge=0, le=100)
    alarm_period_seconds: int = Field(60, ge=10)
    alarm_evaluation_periods: int = Field(1, ge=1)
    alarm_regions: Optional[list[str]] = None

    @field_validator("dimensions")
    @classmethod
    def _few_dimensions(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 29 or any(not k or not v for k, v in value.items()):
            raise ValueError("at most 29 extra dimensions, with non-empty names and values")
        return value


class SnsSinkSettings(_Section):
    enabled: bool = False
    topic_arn: Optional[str] = None
    topic_name: str = Field("PrimeDayPaymentAlerts", min_length=1, max_length=256)
    subject_prefix: str = Field("Paywatch", max_length=40)
    partitions: int = Field(1, ge=1, le=64)
    email_subscription: Optional[str] = None
    sqs_subscription: Optional[str] = None

    @model_validator(mode="after")
    def _fifo_matches_queue(self) -> SnsSinkSettings:
        # SNS refuses these only at subscribe time, deep inside provisioning:
        # a standard topic cannot deliver to a FIFO queue, and a FIFO topic
        # delivers to SQS queues only.
        fifo = self.topic_name.endswith(".fifo")
        if self.sqs_subscription is not None and not fifo and self.sqs_subscription.endswith(".fifo"):
            raise ValueError(f"sqs_subscription: standard topic {self.topic_name} cannot deliver to a FIFO queue")
        if fifo and self.email_subscription is not None:
            raise ValueError("email_subscription: a FIFO topic cannot deliver to email")
        return self


class DynamoDbSinkSettings(_Section):
    enabled: bool = False
    transactions_table: str = Field("paywatch-transactions", min_length=3, max_length=255)
    alerts_table: str = Field("paywatch-alerts", min_length=3, max_length=255)
    aggregates_table: str = Field("paywatch-aggregates", min_length=3, max_length=255)
    transactions: Literal["all", "flagged", "none"] = "flagged"
    ttl_days: Optional[float] = Field(None, gt=0)
    ttl_attribute: str = Field("expires_at", min_length=1)
    partitions: int = Field(2, ge=1, le=64)


class DeadLetterSinkSettings(_Section):
    type: Literal["jsonl", "kafka", "sqs"] = "jsonl"
    path: Optional[str] = None
    kafka_bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    kafka_topic: str = "paywatch-dead-letters"
    sqs_queue_url: Optional[str] = None

    @model_validator(mode="after")
    def _queue_for_sqs(self) -> DeadLetterSinkSettings:
        if self.type == "sqs" and not self.sqs_queue_url:
            raise ValueError("type sqs needs sqs_queue_url")
        return self


LakeZone = Literal["raw", "enriched", "alerts", "metrics"]
_LAKE_ZONES: list[LakeZone] = ["raw", "enriched", "alerts", "metrics"]


class LakeSinkSettings(_Section):
    """The data lake (docs/lake.md): partitioned Parquet on S3 or a local directory."""

    enabled: bool = False
    uri: Optional[str] = None
    zones: list[LakeZone] = Field(default_factory=lambda: list(_LAKE_ZONES), min_length=1)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    target_file_mb: float = Field(128.0, gt=0, le=4096)
    max_file_seconds: int = Field(300, ge=1, le=3600)
    partitions: int = Field(1, ge=1, le=64)
    max_pending_files: int = Field(4, ge=1, le=1000)
    row_group_rows: int = Field(65_536, ge=1_000, le=10_000_000)
    memory_pool: Literal["jemalloc", "mimalloc", "system"] = "jemalloc"
    encryption: Literal["SSE-S3", "SSE-KMS"] = "SSE-S3"
    kms_key_id: Optional[str] = None
    raw_infrequent_access_days: int = Field(30, ge=30)
    glue_database: str = Field("paywatch_lake", pattern=r"^[a-z0-9_]{1,255}$")

    @field_validator("zones")
    @classmethod
    def _distinct_zones(cls, zones: list[LakeZone]) -> list[LakeZone]:
        if len(set(zones)) != len(zones):
            raise ValueError("zones must not repeat")
        return zones

    @model_validator(mode="after")
    def _uri_when_enabled(self) -> LakeSinkSettings:
        if self.enabled and not self.uri:
            raise ValueError("uri: an enabled lake needs uri (s3://bucket/prefix or a local directory)")
        if self.uri is not None:
            if self.uri.startswith("s3://"):
                bucket = self.uri[len("s3://") :].partition("/")[0]
                if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                    raise ValueError(f"uri: {bucket!r} is not a valid S3 bucket name")
            elif "://" in self.uri or not self.uri.strip():
                raise ValueError(f"uri: {self.uri!r} is neither s3://bucket/prefix nor a local directory")
        if self.kms_key_id is not None and self.encryption != "SSE-KMS":
            raise ValueError("kms_key_id is used only with encryption SSE-KMS")
        return self


class SinkSettings(_Section):
    stdout: StdoutSinkSettings = StdoutSinkSettings()
    jsonl: JsonlSinkSettings = JsonlSinkSettings()
    retry: SinkRetrySettings = SinkRetrySettings()
    cloudwatch: CloudWatchSinkSettings = CloudWatchSinkSettings()
    sns: SnsSinkSettings = SnsSinkSettings()
    dynamodb: DynamoDbSinkSettings = DynamoDbSinkSettings()
    dead_letter: DeadLetterSinkSettings = DeadLetterSinkSettings()
    lake: LakeSinkSettings = LakeSinkSettings()


class AwsSettings(_Section):
    """Where AWS calls go. Credentials come only from the standard AWS chain
    (environment, profile, IRSA web identity on EKS), never from settings."""

    region: str = "us-east-1"
    endpoint_url: Optional[str] = None


# Fields every event needs (dropping one would dead-letter every event), and
# fields whose type is not a free string (a hash in their place is invalid).
_REQUIRED_FIELDS = ("transaction_id", "timestamp", "payment_status", "region")
_TYPED_FIELDS = ("timestamp", "payment_status", "amount", "currency")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class PrivacySettings(_Section):
    """What never leaves Paywatch readable (operators/privacy.py, docs/security.md).

    The hash key is never a setting: ``hash_key_env`` names the environment
    variable that holds it.
    """

    mask_pans: bool = True
    drop_fields: list[str] = Field(default_factory=list)
    hash_fields: list[str] = Field(default_factory=list)
    hash_key_env: str = Field("PAYWATCH_HASH_KEY", pattern=_ENV_NAME)

    @field_validator("drop_fields", "hash_fields")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        if any(not name for name in names):
            raise ValueError("field names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError("a field is named twice")
        return names

    @field_validator("drop_fields")
    @classmethod
    def _not_required(cls, names: list[str]) -> list[str]:
        required = sorted(set(names) & set(_REQUIRED_FIELDS))
        if required:
            raise ValueError(f"{required} are required by every event; dropping them rejects every event")
        return names

    @field_validator("hash_fields")
    @classmethod
    def _not_typed(cls, names: list[str]) -> list[str]:
        typed = sorted(set(names) & set(_TYPED_FIELDS))
        if typed:
            raise ValueError(f"{typed} must keep their type; a hash in their place rejects every event")
        return names

    @model_validator(mode="after")
    def _disjoint(self) -> PrivacySettings:
        both = sorted(set(self.drop_fields) & set(self.hash_fields))
        if both:
            raise ValueError(f"{both} are in both drop_fields and hash_fields: pick one")
        return self


class MetricsSettings(_Section):
    port: Optional[int] = Field(None, ge=0, le=65535)


class Settings(_Section):
    source: SourceSettings = SourceSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    validation: ValidationSettings = ValidationSettings()
    enrichment: EnrichmentSettings = EnrichmentSettings()
    windows: WindowSettings = WindowSettings()
    rules: RuleSettings = RuleSettings()
    rules_file: Optional[str] = None
    reference: ReferenceSettings = ReferenceSettings()
    users: UserSettings = UserSettings()
    sinks: SinkSettings = SinkSettings()
    aws: AwsSettings = AwsSettings()
    metrics: MetricsSettings = MetricsSettings()
    privacy: PrivacySettings = PrivacySettings()

    @field_validator("rules_file")
    @classmethod
    def _rules_file_location(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value or ("://" in value and not value.startswith("s3://"))):
            raise ValueError(f"{value!r}: rules_file must be null, a file path or s3://bucket/key")
        if value is not None and value.startswith("s3://") and "/" not in value[len("s3://") :].strip("/"):
            raise ValueError(f"{value!r}: s3:// rules_file needs s3://bucket/key")
        return value
