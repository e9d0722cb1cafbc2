"""Reading the metered usage the ledger exported (JSON lines in the usage store)."""

from __future__ import annotations

from serve_app.blobs import open_store
from serve_app.errors import ModelLoadError
from serve_app.quota.usage import UsageCounts, UsageRow, aggregate
from tenant_registry.errors import InvalidInput
from tenant_registry.platform import PlatformSettings

MAX_USAGE_FILE_BYTES = 256 * 1024 * 1024


def read_month(platform: PlatformSettings, month: str) -> list[UsageRow]:
    """Every exported row of ``month`` (``YYYY-MM``)."""
    uri = f"{platform.ledger.usage_uri.rstrip('/')}/{month}"
    store = open_store(uri, platform.store)
    rows: list[UsageRow] = []
    try:
        for name in store.names():
            if not name.endswith(".jsonl"):
                continue
            text = store.read(name, MAX_USAGE_FILE_BYTES).decode("utf-8")
            rows += [UsageRow.from_json(line) for line in text.splitlines() if line.strip()]
    except ModelLoadError as exc:
        raise InvalidInput(f"cannot read usage from {uri}: {exc}") from None
    return rows


def usage_table(
    platform: PlatformSettings, month: str, tenant: str | None
) -> dict[tuple[str, str, str], UsageCounts]:
    """Usage by ``(tenant, hour, model)`` for a month, optionally one tenant's."""
    return aggregate(read_month(platform, month), tenant=tenant, month=month)
