"""Where S3 lives, for every store the application reads or writes."""

from __future__ import annotations

from pydantic import Field

from serve_app.wire import StrictModel


class StoreSettings(StrictModel):
    """Where S3 lives. Credentials are never here: boto3 reads them from the standard
    AWS variables, profile or instance role."""

    s3_endpoint_url: str | None = Field(
        None, description="For MinIO, Ceph or a test server; None means AWS S3."
    )
    s3_region: str | None = None
