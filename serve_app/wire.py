"""Value types shared by every room and carried between processes.

Everything here sits below the rooms (``http``, ``auth``, ``quota``, ``inference``,
``models``, ``observability``): it imports only ``constants`` and ``errors``, so that
``config`` and the ledger can use these types without importing a room above them.

* ``StrictModel`` — the one pydantic base at the edges: unknown keys are errors
  (Ray Serve ignores them silently) and values are frozen.
* ``ModelId`` — the multiplexed model id ``<tenant>/<model>@<version>``, parsed once.
* ``JwtSettings`` — a tenant's identity provider, as the registry sends it.
* ``TenantDefaults`` — a tenant's own detection defaults, kept by the ledger.
* ``utc_iso`` — the one timestamp format of audit lines, the registry and the CLI.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.constants import JWT_ALGORITHMS, MAX_IOU, MIN_IOU

MODEL_ID_RE = re.compile(
    r"^(?P<tenant>[a-z][a-z0-9-]{1,31})/(?P<model>[a-z][a-z0-9_-]{0,63})@(?P<version>[0-9]{1,9})$"
)


class StrictModel(BaseModel):
    """Frozen, and closed to unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelId(NamedTuple):
    """A multiplexed model id: which tenant's model, at which version."""

    tenant: str
    model: str
    version: int

    @classmethod
    def parse(cls, text: str) -> ModelId:
        """Raises ValueError for anything but ``<tenant>/<model>@<version>``."""
        found = MODEL_ID_RE.fullmatch(text)
        if found is None:
            raise ValueError(f"{text[:80]!r} is not a model id <tenant>/<model>@<version>")
        return cls(found["tenant"], found["model"], int(found["version"]))

    @property
    def label(self) -> str:
        """``<model>@<version>``: how a tenant sees its own model (no tenant id)."""
        return f"{self.model}@{self.version}"

    def __str__(self) -> str:
        return f"{self.tenant}/{self.model}@{self.version}"


def model_id(tenant_id: str, model: str, version: int) -> str:
    """The multiplexed model id ``<tenant>/<model>@<version>``."""
    return str(ModelId(tenant_id, model, version))


def utc_iso(
    epoch_s: float | None = None, timespec: Literal["seconds", "milliseconds"] = "seconds"
) -> str:
    """``epoch_s`` (now if None) as an RFC 3339 UTC timestamp ending in ``Z``."""
    if epoch_s is not None and timespec == "milliseconds":  # every audit line: no datetime
        frac, whole = math.modf(epoch_s)  # rounded to microseconds as datetime does
        us = round(frac * 1e6)
        if us >= 1_000_000:
            whole, us = whole + 1, us - 1_000_000
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{us // 1000:03d}Z"
    moment = datetime.now(UTC) if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def check_jwks_url(url: str) -> str:
    """A JWKS URL must be HTTPS; plain HTTP only to a loopback address (tests, sidecars)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
    raise ValueError(f"jwks_url must be an https:// URL (http only to loopback), got {url[:80]!r}")


def load_public_key(pem: str) -> Any:
    """A PEM public key, parsed; ValueError names what is wrong with it."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None


class JwtSettings(StrictModel):
    """One tenant's identity provider."""

    issuer: str = Field(min_length=1, max_length=512)
    audience: str = Field(min_length=1, max_length=512)
    algorithms: tuple[str, ...] = ("RS256",)
    public_keys_pem: tuple[str, ...] = ()
    jwks_url: str | None = Field(None, max_length=2048)

    @field_validator("public_keys_pem")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pem in value:
            load_public_key(pem)  # a key that does not parse fails the config, not a request
        return value

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else check_jwks_url(value)

    @model_validator(mode="after")
    def _some_keys(self) -> JwtSettings:
        if not self.public_keys_pem and self.jwks_url is None:
            raise ValueError("give public_keys_pem, jwks_url or both")
        return self

    @field_validator("algorithms")
    @classmethod
    def _allowlisted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in JWT_ALGORITHMS]
        if not value or bad:
            raise ValueError(f"algorithms must be among {sorted(JWT_ALGORITHMS)}, got {bad}")
        return value


class TenantDefaults(StrictModel):
    """What a tenant may set with ``PUT /v1/policy``; ``None`` keeps the operator's default."""

    conf: float | None = Field(None, ge=0, le=1)
    iou: float | None = Field(None, ge=MIN_IOU, le=MAX_IOU)
    max_det: int | None = Field(None, ge=1)
