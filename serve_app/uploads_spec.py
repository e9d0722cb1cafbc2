"""Where tenants' own model versions are kept, and the limits on uploading them
(``AppArgs.uploads``; the registry renders it from the platform's model store)."""

from __future__ import annotations

from pydantic import Field

from serve_app.constants import (
    SHA256_HEX_PATTERN,
    UPLOAD_MAX_BYTES,
    UPLOAD_MAX_VERSIONS,
    UPLOADS_PER_HOUR,
    VALIDATION_MEMORY_BYTES,
    VALIDATION_TIMEOUT_S,
)
from serve_app.store_settings import StoreSettings
from serve_app.wire import StrictModel

# Written beside a version by the ledger once validation passed; a detector loads an
# uploaded version only with it, and only the weights with its sha256.
VALIDATED_FILE = "validated.json"


class UploadsSpec(StrictModel):
    """Tenants' uploaded versions: ``<uri>/<tenant>/<model>/<version>/``."""

    uri: str = Field(
        "file://var/uploads",
        pattern=r"^(s3|file)://.+",
        description="Folder of uploaded versions (s3:// in a cluster of several nodes).",
    )
    store: StoreSettings = StoreSettings()
    max_bytes: int = Field(UPLOAD_MAX_BYTES, ge=1024, description="One upload, all parts.")
    max_versions: int = Field(UPLOAD_MAX_VERSIONS, ge=1, description="Kept per model.")
    per_hour: int = Field(UPLOADS_PER_HOUR, ge=1, description="Uploads per tenant and hour.")
    validation_timeout_s: float = Field(VALIDATION_TIMEOUT_S, gt=0, le=3600)
    validation_memory_bytes: int = Field(VALIDATION_MEMORY_BYTES, ge=64 * 1024 * 1024)

    def version_uri(self, tenant: str, model: str, version: int) -> str:
        return f"{self.uri.rstrip('/')}/{tenant}/{model}/{version}"


class ValidatedMarker(StrictModel):
    sha256: str = Field(pattern=SHA256_HEX_PATTERN)
