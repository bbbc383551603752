"""The data lake sink: partitioned Parquet on S3 or a local directory (docs/lake.md).

``layout`` names objects, ``tables`` turns flow items into Arrow tables,
``rolling`` decides (deterministically) where files start and end,
``buckets`` does the same for the small alert and metric streams, ``store``
writes finished objects, ``sink`` ties them to Bytewax and the shared
delivery/retry machinery, ``catalog`` describes the tables for Glue/Athena.
"""
