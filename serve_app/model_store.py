"""Where model versions live, behind one small interface.

A version is a folder (``file://``) or key prefix (``s3://``, a later issue)
holding ``manifest.json`` and the weights. ``fetch_version`` reads both, bounded
in size, and verifies the weights against the manifest before anyone parses them.

Relative ``file://`` URIs (``file://models/demo/shapes/1``) are resolved against
``YOLOSERVE_MODEL_ROOT`` or, by default, the project root (the folder holding the
``serve_app`` package). Replicas and ``serve deploy``'s controller do not run in
the operator's working directory, so the shell's cwd is never used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serve_app.constants import MANIFEST_FILE, MAX_MANIFEST_BYTES, MAX_WEIGHTS_BYTES
from serve_app.errors import ModelLoadError
from serve_app.manifest import ModelManifest, parse_manifest, verify_weights

MODEL_ROOT_ENV = "YOLOSERVE_MODEL_ROOT"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ModelStore(Protocol):
    """Reads named files of one model version."""

    def read(self, name: str, max_bytes: int) -> bytes: ...


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


def model_root() -> Path:
    """Base folder for relative ``file://`` URIs."""
    return Path(os.environ.get(MODEL_ROOT_ENV, str(PROJECT_ROOT)))


def resolve_file_uri(uri: str) -> Path:
    """The absolute folder a ``file://`` URI names."""
    if not uri.startswith("file://"):
        raise ValueError(f"not a file:// URI: {uri!r}")
    path = Path(uri.removeprefix("file://"))
    return path if path.is_absolute() else (model_root() / path).resolve()


def open_store(uri: str) -> ModelStore:
    """The store for one version URI."""
    if uri.startswith("file://"):
        return FileStore(resolve_file_uri(uri))
    raise ModelLoadError(f"unsupported model store URI {uri!r}: use file://")


@dataclass(frozen=True)
class FetchedVersion:
    manifest: ModelManifest
    weights: bytes


def fetch_version(uri: str) -> FetchedVersion:
    """Read and verify one model version.

    Raises:
        ModelLoadError: Missing files, an invalid manifest, or weights whose size or
            sha256 differ from the manifest.
    """
    store = open_store(uri)
    manifest = parse_manifest(store.read(MANIFEST_FILE, MAX_MANIFEST_BYTES))
    weights = store.read(manifest.weights_file, min(manifest.size_bytes, MAX_WEIGHTS_BYTES))
    verify_weights(manifest, weights)
    return FetchedVersion(manifest=manifest, weights=weights)
