"""Node-local cache of model weights (and graphs compiled from them), bounded in bytes.

Several replicas on one node may ask for the same weights at once: a per-digest
``flock`` makes one of them download while the others wait and then read the
file it wrote. Files are written to a temporary name and renamed into place, so a
reader never sees half a file; every read is re-hashed, so a file corrupted on
disk is dropped and fetched again rather than served.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from serve_app.constants import CACHE_DIR_ENV, CACHE_MAX_BYTES
from serve_app.errors import ModelLoadError


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path(tempfile.gettempdir()) / "yoloserve-cache"))


@dataclass(frozen=True)
class WeightsCache:
    root: Path
    max_bytes: int = CACHE_MAX_BYTES

    def _path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.bin"

    @contextlib.contextmanager
    def _locked(self, sha256: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{sha256}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_or_fetch(self, sha256: str, fetch: Callable[[], bytes]) -> bytes:
        """The bytes whose digest is ``sha256``: from the cache, or fetched and cached.

        Raises:
            ModelLoadError: What ``fetch`` returned does not hash to ``sha256``.
        """
        path = self._path(sha256)
        with self._locked(sha256):
            if path.is_file():
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() == sha256:
                    os.utime(path)  # recency for eviction
                    return data
                path.unlink(missing_ok=True)  # corrupted on disk: fetch again
            data = fetch()
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise ModelLoadError(
                    f"weights sha256 {digest[:12]}… does not match the manifest's {sha256[:12]}…"
                )
            self._write(path, data)
        self.evict(keep=sha256)
        return data

    def derived(self, key: str, build: Callable[[], bytes], suffix: str) -> Path:
        """The file ``{key}{suffix}`` made by ``build`` (a compiled graph, say), built once
        per node; its own digest is kept beside it, so a file corrupted on disk is rebuilt
        rather than used. Returns the path (engines open files, not bytes)."""
        path = self.root / f"{key}{suffix}"
        digest_path = path.with_name(path.name + ".sha256")
        with self._locked(key):
            fresh = path.is_file() and digest_path.is_file()
            if fresh and hashlib.sha256(path.read_bytes()).hexdigest() == digest_path.read_text():
                os.utime(path)
                return path
            data = build()
            self._write(digest_path, hashlib.sha256(data).hexdigest().encode())
            self._write(path, data)
        self.evict(keep=key)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def evict(self, keep: str | None = None) -> list[str]:
        """Drop least recently used files until the cache fits; returns dropped keys."""
        files = []
        for entry in [*self.root.glob("*.bin"), *self.root.glob("*.onnx")]:
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                files.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in files)
        dropped = []
        for _, size, entry in sorted(files):
            if total <= self.max_bytes:
                break
            if entry.stem == keep:
                continue
            entry.unlink(missing_ok=True)
            entry.with_name(entry.name + ".sha256").unlink(missing_ok=True)
            total -= size
            dropped.append(entry.stem)
        return dropped
