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
