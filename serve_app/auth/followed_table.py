"""A router's tenant table, kept in step with the tenant directory.

``FollowedTable.configure`` builds the table from the router's ``user_config`` (tenants
listed there win) plus the directory's records; a background task then reads the
directory's head every ``poll_s`` and applies each changed tenant with ``put`` or
``remove``: one tenant's change costs one tenant's work, however many there are. When
the store cannot be read the table stays as it is (fail static); a tenant the table does
not know is a 401, never let through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from serve_app.auth.jwks import JwksPool
from serve_app.auth.tenants import TenantTable
from serve_app.blobs import BlobStore, open_store
from serve_app.config import DirectorySpec, Quota, RouterConfig, TenantEntry
from serve_app.directory import DirectoryView, return_freed_memory

logger = logging.getLogger("ray.serve")


class FollowedTable:
    """The current ``TenantTable`` (``table``) and the task that keeps it current."""

    def __init__(self, jwks: JwksPool) -> None:
        self._jwks = jwks
        self.table = TenantTable(RouterConfig(), jwks)
        self._config = RouterConfig()
        self._view = DirectoryView(keep_sources=False)  # a router never reads them
        self._store: BlobStore | None = None
        self._spec: DirectorySpec | None = None
        self._task: asyncio.Task[None] | None = None

    async def configure(self, config: RouterConfig) -> None:
        """A new ``user_config``: rebuild the table; follow its directory, if any."""
        self._config = config
        if config.directory != self._spec:
            self._spec = config.directory
            self._view = DirectoryView(keep_sources=False)  # a router never reads them
            self._store = (
                None if self._spec is None else open_store(self._spec.uri, self._spec.store)
            )
        if self._store is not None:
            await asyncio.to_thread(self._view.refresh, self._store)
        self.table = await self._rebuilt()
        if self._store is None:
            await self.close()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow())

    def quota_of(self, tenant_id: str) -> Quota | None:
        """A tenant's current quota (None: gone), as the settlements need it."""
        entry = self.table.find(tenant_id)
        return None if entry is None else entry.quota

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _build(self) -> TenantTable:
        listed = {t.id for t in self._config.tenants}
        table = TenantTable(self._config, self._jwks)
        for record in self._view.records.values():
            if record.entry.id not in listed:
                self._put(table, record.entry)
        return table

    async def _follow(self) -> None:
        while self._store is not None and self._spec is not None:
            await asyncio.sleep(self._spec.poll_s)
            try:
                changed = await asyncio.to_thread(self._view.refresh, self._store)
            except Exception:  # a bug must not stop the following (refresh fails static)
                logger.exception("tenant directory: refresh failed")
                continue
            if changed is None:  # a snapshot: every tenant may differ
                self.table = await self._rebuilt()
            else:
                self.apply(changed)

    async def _rebuilt(self) -> TenantTable:
        """A table of every tenant, built off the event loop (10,000 tenants take ~1 s),
        then swapped in by the caller with one assignment."""
        table = await asyncio.to_thread(self._build)
        return_freed_memory()  # what parsing a snapshot left behind
        return table

    def apply(self, changed: list[str] | None) -> None:
        """Apply what ``DirectoryView.refresh`` returned."""
        if changed is None:
            self.table = self._build()
            return
        listed = {t.id for t in self._config.tenants}
        for tenant_id in changed:
            if tenant_id in listed:
                continue
            record = self._view.records.get(tenant_id)
            if record is None:
                self.table.remove(tenant_id)
            else:
                self._put(self.table, record.entry)

    @staticmethod
    def _put(table: TenantTable, entry: TenantEntry) -> None:
        try:
            table.put(entry)
        except ValueError as exc:  # an issuer another tenant holds: that tenant keeps it
            logger.error("tenant directory: %s not applied: %s", entry.id, exc)
