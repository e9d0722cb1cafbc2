"""Where model versions live, behind one small interface: ``file://`` and ``s3://``.

A version is a folder (``file://``) or key prefix (``s3://bucket/prefix``) holding
``manifest.json`` and the weights. ``fetch_version`` reads both, bounded in size,
and verifies the weights against the manifest's sha256 before anyone parses them;
with a ``WeightsCache`` the weights come from the node-local cache when present.

Relative ``file://`` URIs (``file://models/demo/shapes/1``) are resolved against
``YOLOSERVE_MODEL_ROOT`` or, by default, the project root (the folder holding the
``serve_app`` package). Replicas and ``serve deploy``'s controller do not run in
the operator's working directory, so the shell's cwd is never used.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.blobs import open_store
from serve_app.config import StoreSettings
from serve_app.constants import MANIFEST_FILE, MAX_MANIFEST_BYTES, MAX_WEIGHTS_BYTES
from serve_app.errors import ModelLoadError
from serve_app.models.cache import WeightsCache
from serve_app.models.manifest import ModelManifest, parse_manifest, verify_weights


@dataclass(frozen=True)
class FetchedVersion:
    manifest: ModelManifest
    weights: bytes


def fetch_version(
    uri: str,
    settings: StoreSettings | None = None,
    cache: WeightsCache | None = None,
    sha256: str | None = None,
) -> FetchedVersion:
    """Read and verify one model version.

    ``sha256``: the digest the registry recorded when the version was pushed (rendered
    into the detector's config). It decides which weights these must be — the manifest
    beside them sits in the same store and could have been replaced with them — and
    keys the node cache.

    Raises:
        ModelLoadError: Missing files, an invalid manifest, a manifest naming other
            weights than the registry's digest, or weights whose size or sha256 differ.
    """
    manifest = fetch_manifest(uri, settings, sha256)
    return FetchedVersion(manifest=manifest, weights=fetch_weights(uri, manifest, settings, cache))


def fetch_manifest(
    uri: str, settings: StoreSettings | None = None, sha256: str | None = None
) -> ModelManifest:
    """A version's manifest alone (``fetch_version`` without the weights): enough to know
    whether a replica already holds its network.

    Raises:
        ModelLoadError: A missing or invalid manifest, or one naming other weights than the
            registry's digest.
    """
    manifest = parse_manifest(open_store(uri, settings).read(MANIFEST_FILE, MAX_MANIFEST_BYTES))
    if sha256 is not None and manifest.sha256 != sha256:
        raise ModelLoadError(
            f"the files at this version's location are not the weights the registry recorded "
            f"(sha256 {manifest.sha256[:12]}…, expected {sha256[:12]}…): push the version again"
        )
    return manifest


def fetch_weights(
    uri: str,
    manifest: ModelManifest,
    settings: StoreSettings | None = None,
    cache: WeightsCache | None = None,
) -> bytes:
    """The weights ``manifest`` names, bounded in size and verified against its sha256.

    Raises:
        ModelLoadError: Missing, or their size or sha256 differ from the manifest's.
    """
    store = open_store(uri, settings)
    limit = min(manifest.size_bytes, MAX_WEIGHTS_BYTES)
    if cache is None:
        weights = store.read(manifest.weights_file, limit)
    else:
        weights = cache.get_or_fetch(
            manifest.sha256, lambda: store.read(manifest.weights_file, limit)
        )
    verify_weights(manifest, weights)
    return weights
