"""Writing finished lake objects: S3 or a local directory, visible only when complete.

S3: one ``PutObject`` per file. A single PUT is atomic (a reader sees the
whole object or none of it), and files are bounded by
``sinks.lake.target_file_mb``, far under the 5 GB single-PUT limit, so
multipart uploads (and their abandoned parts) are not needed.
Local: the file is written under a temporary name in its folder and renamed
into place (``os.replace`` is atomic within one file system), so a reader or a
crash never sees half a file, and writing the same name again replaces it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from connectors.lake.layout import LakeLocation


class ObjectStore(Protocol):
    """Puts one complete object under a key relative to the lake root."""

    def put(self, relative_key: str, data: bytes) -> None: ...

    def list_keys(self, relative_prefix: str) -> list[str]: ...

    def delete(self, relative_keys: list[str]) -> None: ...

    @property
    def resource(self) -> str: ...


class S3Store:
    """PutObject into ``bucket/prefix``; errors propagate to the delivery's classifier."""

    def __init__(self, client: Any, location: LakeLocation) -> None:
        self._client = client
        self._location = location

    @property
    def resource(self) -> str:
        return f"S3 bucket {self._location.bucket}"

    def put(self, relative_key: str, data: bytes) -> None:
        self._client.put_object(
            Bucket=self._location.bucket,
            Key=self._location.key(relative_key),
            Body=data,
            ContentType="application/vnd.apache.parquet",
        )

    def list_keys(self, relative_prefix: str) -> list[str]:
        """Keys (relative to the lake root) that start with ``relative_prefix``."""
        root = self._location.key("")
        keys = []
        token: dict[str, str] = {}
        while True:
            page = self._client.list_objects_v2(
                Bucket=self._location.bucket, Prefix=self._location.key(relative_prefix), **token
            )
            keys += [obj["Key"][len(root) :] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, relative_keys: list[str]) -> None:
        for start in range(0, len(relative_keys), 1000):
            batch = relative_keys[start : start + 1000]
            self._client.delete_objects(
                Bucket=self._location.bucket,
                Delete={"Objects": [{"Key": self._location.key(k)} for k in batch], "Quiet": True},
            )


class LocalStore:
    """Write-then-rename under a local directory."""

    def __init__(self, location: LakeLocation) -> None:
        self._location = location

    @property
    def resource(self) -> str:
        return f"directory {self._location.prefix}"

    def put(self, relative_key: str, data: bytes) -> None:
        path = Path(self._location.key(relative_key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".writing-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list_keys(self, relative_prefix: str) -> list[str]:
        folder, _, name = relative_prefix.rpartition("/")
        path = Path(self._location.key(folder))
        if not path.is_dir():
            return []
        return [f"{folder}/{p.name}" for p in sorted(path.iterdir()) if p.name.startswith(name)]

    def delete(self, relative_keys: list[str]) -> None:
        for key in relative_keys:
            Path(self._location.key(key)).unlink(missing_ok=True)
