"""Blob stores behind one small interface: ``file://`` folders and ``s3://`` prefixes.

Model versions (``serve_app.models.store``) and the ledger's usage export
(``serve_app.quota.ledger``) both read and write named files through it, so it lives
below both. Relative ``file://`` URIs (``file://models/demo/shapes/1``) are resolved
against ``YOLOSERVE_MODEL_ROOT`` or, by default, the project root (the folder holding
the ``serve_app`` package). Replicas and ``serve deploy``'s controller do not run in
the operator's working directory, so the shell's cwd is never used.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serve_app.config import StoreSettings
from serve_app.constants import (
    MODEL_ROOT_ENV,
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_READ_TIMEOUT_S,
)
from serve_app.errors import ModelLoadError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BlobStore(Protocol):
    """Reads and writes named files under one folder or key prefix."""

    def read(self, name: str, max_bytes: int) -> bytes: ...

    def write(self, name: str, data: bytes) -> None: ...

    def names(self) -> list[str]: ...


@dataclass(frozen=True)
class FileStore:
    """A version folder on a local or mounted file system."""

    root: Path

    def read(self, name: str, max_bytes: int) -> bytes:
        path = self.root / name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ModelLoadError(f"{name} is {size} bytes, over the {max_bytes}-byte limit")
            with path.open("rb") as fh:
                return fh.read(max_bytes + 1)
        except FileNotFoundError:
            raise ModelLoadError(f"{name} not found in {self.root}") from None
        except OSError as exc:
            raise ModelLoadError(f"cannot read {name} from {self.root}: {exc.strerror}") from None

    def write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".partial-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.root / name)

    def names(self) -> list[str]:
        """Files directly in the folder (none if it does not exist), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")
        )


@functools.lru_cache(maxsize=16)
def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


@dataclass(frozen=True)
class S3Store:
    """A version under ``s3://bucket/prefix`` (AWS, or MinIO/Ceph via ``endpoint_url``)."""

    bucket: str
    prefix: str
    settings: StoreSettings

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _client(self) -> Any:
        return _s3_client(self.settings.s3_endpoint_url, self.settings.s3_region)

    def read(self, name: str, max_bytes: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}/{self._key(name)}"
        try:
            obj = self._client().get_object(Bucket=self.bucket, Key=self._key(name))
            size = int(obj.get("ContentLength", 0))
            if size > max_bytes:
                obj["Body"].close()
                raise ModelLoadError(f"{where} is {size} bytes, over the {max_bytes}-byte limit")
            data: bytes = obj["Body"].read(max_bytes + 1)
            return data
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise ModelLoadError(f"{where} not found") from None
            raise ModelLoadError(f"cannot read {where}: {code}") from None
        except BotoCoreError as exc:
            raise ModelLoadError(f"cannot read {where}: {type(exc).__name__}") from None

    def write(self, name: str, data: bytes) -> None:
        import base64
        import hashlib

        from botocore.exceptions import BotoCoreError, ClientError

        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        try:
            self._client().put_object(
                Bucket=self.bucket, Key=self._key(name), Body=data, ChecksumSHA256=checksum
            )
        except (ClientError, BotoCoreError) as exc:
            raise ModelLoadError(
                f"cannot write s3://{self.bucket}/{self._key(name)}: {exc}"
            ) from None

    def names(self) -> list[str]:
        """Objects directly under the prefix, sorted."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.prefix}/" if self.prefix else ""
        found: list[str] = []
        try:
            pages = (
                self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            )
            for page in pages:
                found += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise ModelLoadError(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from None
        return sorted(found)


def model_root() -> Path:
    """Base folder for relative ``file://`` URIs."""
    return Path(os.environ.get(MODEL_ROOT_ENV, str(PROJECT_ROOT)))


def resolve_path(path: str) -> Path:
    """An absolute path; relative ones are taken from the model root, never the cwd."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else (model_root() / candidate).resolve()


def resolve_file_uri(uri: str) -> Path:
    """The absolute folder a ``file://`` URI names."""
    if not uri.startswith("file://"):
        raise ValueError(f"not a file:// URI: {uri!r}")
    path = Path(uri.removeprefix("file://"))
    return path if path.is_absolute() else (model_root() / path).resolve()


def open_store(uri: str, settings: StoreSettings | None = None) -> BlobStore:
    """The store for one folder URI (``file://`` or ``s3://``)."""
    if uri.startswith("file://"):
        return FileStore(resolve_file_uri(uri))
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ModelLoadError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        return S3Store(
            bucket=bucket, prefix=prefix.strip("/"), settings=settings or StoreSettings()
        )
    raise ModelLoadError(f"unsupported model store URI {uri!r}: use file:// or s3://")
