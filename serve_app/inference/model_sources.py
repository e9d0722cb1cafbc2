"""Where a detector finds a model id's weights: its ``user_config`` catalog, else the
tenant directory (issue 18: the shared pool's catalog is not pushed with every change),
else the tenant's own uploads — only a version whose validation passed, which the
ledger marks with ``validated.json`` (the weights' sha256) beside it.

Called on a model load only (Serve's multiplex wrapper runs one load at a time per
replica), so a directory read costs nothing on the request path of a loaded model.
"""

from __future__ import annotations

from serve_app.blobs import BlobStore, open_store
from serve_app.config import DetectorConfig, ModelSource
from serve_app.directory import DirectoryView
from serve_app.errors import ModelLoadError
from serve_app.uploads_spec import VALIDATED_FILE, UploadsSpec, ValidatedMarker
from serve_app.wire import MODEL_ID_RE, model_id

MAX_MARKER_BYTES = 4096


class ModelSources:
    """The catalog in force: ``configure`` with each ``user_config``."""

    def __init__(self, uploads: UploadsSpec | None = None) -> None:
        self._uploads = uploads
        self.config = DetectorConfig()
        self._view = DirectoryView()
        self._store: BlobStore | None = None
        self._active: tuple[int, frozenset[str]] = (-2, frozenset())

    def configure(self, config: DetectorConfig) -> None:
        if config.directory != self.config.directory:
            self._view = DirectoryView()
            spec = config.directory
            self._store = None if spec is None else open_store(spec.uri, spec.store)
        self.config = config

    def source(self, mid: str) -> ModelSource | None:
        """Where ``mid`` is (blocking: may read the directory's new changes)."""
        found = self.config.models.get(mid)
        if found is None and self._store is not None:
            if self._view.source(mid) is None:
                self._view.refresh(self._store)  # a version published since the last look
            found = self._view.source(mid)
        return found or self._uploaded(mid)

    def _uploaded(self, mid: str) -> ModelSource | None:
        """A tenant's own version that passed validation, if ``mid`` names one."""
        found = MODEL_ID_RE.fullmatch(mid)
        if self._uploads is None or found is None:
            return None
        uri = self._uploads.version_uri(found["tenant"], found["model"], int(found["version"]))
        try:
            raw = open_store(uri, self._uploads.store).read(VALIDATED_FILE, MAX_MARKER_BYTES)
            marker = ValidatedMarker.model_validate_json(raw)
        except (ModelLoadError, OSError, ValueError):
            return None  # not uploaded, not validated (yet), or rejected
        return ModelSource(uri=uri, sha256=marker.sha256)

    def active(self) -> frozenset[str]:
        """Model ids that are their model's active version (the rest are pinned)."""
        seq, ids = self._active
        if seq != self._view.seq:
            ids = frozenset(
                model_id(r.entry.id, m.name, m.active_version)
                for r in self._view.records.values()
                for m in r.entry.models
            )
            self._active = (self._view.seq, ids)
        return ids | frozenset(self.config.active)
