"""The lake's tables for Glue and Athena: columns from the Parquet schemas, partition projection.

With partition projection Athena computes the ``date``/``hour`` partitions from
the table properties instead of a crawler or ``MSCK REPAIR``: a new hour's
files are queryable the moment they land. ``docs/lake.md`` shows the same
definitions as Athena DDL (:func:`athena_ddl` prints them).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from connectors.lake.tables import ALERTS_SCHEMA, ENRICHED_SCHEMA, METRICS_SCHEMA, RAW_SCHEMA

SCHEMAS = {"raw": RAW_SCHEMA, "enriched": ENRICHED_SCHEMA, "alerts": ALERTS_SCHEMA, "metrics": METRICS_SCHEMA}
PROJECTION_START = "2020-01-01"


def glue_type(arrow: pa.DataType) -> str:
    """The Hive/Glue type of an Arrow column type the lake writes."""
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    simple = {
        pa.string(): "string",
        pa.binary(): "binary",
        pa.int32(): "int",
        pa.int64(): "bigint",
        pa.float64(): "double",
        pa.bool_(): "boolean",
    }
    return simple[arrow]


def table_name(zone: str) -> str:
    return zone


def zone_location(bucket: str, prefix: str, zone: str) -> str:
    return f"s3://{bucket}/{prefix + '/' if prefix else ''}{zone}/"


def projection_parameters(location: str) -> dict[str, str]:
    """Partition projection over ``date=YYYY-MM-DD/hour=HH`` since PROJECTION_START."""
    return {
        "classification": "parquet",
        "projection.enabled": "true",
        "projection.date.type": "date",
        "projection.date.format": "yyyy-MM-dd",
        "projection.date.range": f"{PROJECTION_START},NOW",
        "projection.date.interval": "1",
        "projection.date.interval.unit": "DAYS",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "projection.hour.digits": "2",
        "storage.location.template": location + "date=${date}/hour=${hour}",
    }


def table_input(zone: str, bucket: str, prefix: str) -> dict[str, Any]:
    """Glue ``TableInput`` of one zone."""
    location = zone_location(bucket, prefix, zone)
    return {
        "Name": table_name(zone),
        "Description": f"Paywatch lake, {zone} zone (docs/lake.md)",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": projection_parameters(location),
        "PartitionKeys": [{"Name": "date", "Type": "string"}, {"Name": "hour", "Type": "string"}],
        "StorageDescriptor": {
            "Columns": [{"Name": f.name, "Type": glue_type(f.type)} for f in SCHEMAS[zone]],
            "Location": location,
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
        },
    }


def athena_ddl(zone: str, database: str, bucket: str, prefix: str) -> str:
    """``CREATE EXTERNAL TABLE`` for Athena, equivalent to :func:`table_input`."""
    spec = table_input(zone, bucket, prefix)
    columns = ",\n".join(f"  `{c['Name']}` {c['Type']}" for c in spec["StorageDescriptor"]["Columns"])
    props = ",\n".join(f"  '{k}' = '{v}'" for k, v in spec["Parameters"].items())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{spec['Name']} (\n{columns}\n)\n"
        "PARTITIONED BY (`date` string, `hour` string)\n"
        "STORED AS PARQUET\n"
        f"LOCATION '{spec['StorageDescriptor']['Location']}'\n"
        f"TBLPROPERTIES (\n{props}\n);"
    )
