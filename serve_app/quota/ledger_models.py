"""The quota ledger's half of tenants' own model versions: the calls routers make, the
validation tasks it runs, and the changes routers follow.

Mixed into ``QuotaLedger``: the ledger is already the one place every router replica
asks, with a durable file and a standby, so it keeps the versions too (``model_book``).
Every call acts only as the leader (``_start``).

* An upload is recorded (``begin_upload``), the router writes its files to the uploads
  store, then ``uploaded`` starts its validation: a Ray task (``validation.py``) the
  ledger awaits up to the spec's timeout, then force-cancels. A version that passed gets
  ``validated.json`` beside it (its sha256), the only thing that lets a detector load
  it; then its status is ``ready``. A new leader restarts the validations that were
  under way.
* Routers follow changes with ``models_since``: one call per router every
  ``MODELS_POLL_S`` returns the tenants whose state changed (all of them after a
  leader change), so 10,000 tenants cost no more than ten.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from serve_app.blobs import open_store
from serve_app.inference import validation
from serve_app.models.rollout import RolloutRequest
from serve_app.models.versions import INDEX_FILE, TenantModels, UploadIndex, VersionRecord
from serve_app.observability.metrics import RolloutMetrics
from serve_app.quota.model_book import ModelBook
from serve_app.uploads_spec import VALIDATED_FILE, UploadsSpec, ValidatedMarker

logger = logging.getLogger("ray.serve")
INDEX_EVERY_PAIRS = 20  # rollout pairs between two writes of the model's index


class LedgerModels:
    """What ``QuotaLedger`` adds for tenants' own models (it sets ``_book``, ``_uploads``)."""

    _book: ModelBook
    _uploads: UploadsSpec

    async def _start(self) -> None:  # QuotaLedger's
        raise NotImplementedError

    def _models_init(self) -> None:
        self._rollout_metrics = RolloutMetrics.create()
        self._models_epoch = uuid.uuid4().hex
        self._models_seq = 0
        self._models_changed: dict[str, int] = {}
        self._validating: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self._index_lock = asyncio.Lock()
        self._pairs = 0
        self._index_writes: set[asyncio.Task[None]] = set()

    def _models_changed_now(self, tenant: str, model: str) -> None:
        """Routers see it at their next poll; the operator's registry at its next
        ``tenantctl model list`` (the model's index in the uploads store)."""
        self._models_seq += 1
        self._models_changed[tenant] = self._models_seq
        task = asyncio.get_running_loop().create_task(self._write_index(tenant, model))
        self._index_writes.add(task)
        task.add_done_callback(self._index_writes.discard)

    async def _write_index(self, tenant: str, model: str) -> None:
        async with self._index_lock:  # one at a time, each with the state as it is then
            index = UploadIndex(versions=self._book.uploaded(tenant, model))
            folder = self._uploads.uri.rstrip("/") + f"/{tenant}/{model}"
            try:
                store = open_store(folder, self._uploads.store)
                await asyncio.to_thread(store.write, INDEX_FILE, index.model_dump_json().encode())
            except Exception as exc:  # the next change writes it again
                logger.warning("ledger: index of %s/%s not written: %s", tenant, model, exc)

    def _resume_validations(self) -> None:
        """A new leader: finish what the last one was validating."""
        for tenant, model, version, sha256 in self._book.validating():
            self._validate(tenant, model, version, sha256)

    # ------------------------------------------------------------ uploads

    async def begin_upload(
        self, tenant: str, model: str, floor: int, sha256: str, size: int
    ) -> int:
        """A version number for a new upload (429 past the tenant's limits)."""
        await self._start()
        return self._book.begin(tenant, model, floor, sha256, size, self._uploads)

    async def uploaded(self, tenant: str, model: str, version: int, stored: bool) -> None:
        """The router wrote the files (``stored``) or could not: validate, or reject."""
        await self._start()
        if not stored:
            self._book.finish(tenant, model, version, "rejected",
                              "the upload could not be stored; upload it again")  # fmt: skip
            self._models_changed_now(tenant, model)
            return
        record = self._book.record(tenant, model, version)
        assert record.sha256 is not None
        self._validate(tenant, model, version, record.sha256)

    def _validate(self, tenant: str, model: str, version: int, sha256: str) -> None:
        key = (tenant, model, version)
        if key not in self._validating:
            task = asyncio.get_running_loop().create_task(self._run_validation(*key, sha256))
            self._validating[key] = task
            task.add_done_callback(lambda _: self._validating.pop(key, None))

    async def _run_validation(self, tenant: str, model: str, version: int, sha256: str) -> None:
        import ray

        spec = self._uploads
        uri = spec.version_uri(tenant, model, version)
        ref = validation.start(spec, uri, sha256)
        try:
            # the child's own timeout fires first; this one catches a task that hangs
            said: dict[str, Any] = await asyncio.wait_for(ref, spec.validation_timeout_s + 30)
        except Exception as exc:  # timed out, or the worker died (out of memory)
            ray.cancel(ref, force=True)
            logger.warning("ledger: validation of %s/%s@%d failed: %s",
                           tenant, model, version, type(exc).__name__)  # fmt: skip
            said = {"error": "validation did not finish: the model is too large or too slow "
                             "to load within the limits; upload a smaller model"}  # fmt: skip
        if "error" in said:
            self._book.finish(tenant, model, version, "rejected", str(said["error"]))
        else:
            marker = ValidatedMarker(sha256=sha256).model_dump_json().encode()
            try:
                store = open_store(uri, spec.store)
                await asyncio.to_thread(store.write, VALIDATED_FILE, marker)
            except Exception as exc:
                logger.error("ledger: could not mark %s/%s@%d validated: %s",
                             tenant, model, version, exc)  # fmt: skip
                why = "the validated model could not be stored; upload it again"
                self._book.finish(tenant, model, version, "rejected", why)
            else:
                self._book.finish(tenant, model, version, "ready", None, said.get("metrics"))
        self._models_changed_now(tenant, model)

    # ------------------------------------------------------------ records and changes

    async def version_record(self, tenant: str, model: str, version: int) -> VersionRecord:
        await self._start()
        return self._book.record(tenant, model, version)

    async def version_records(self, tenant: str, model: str) -> list[VersionRecord]:
        await self._start()
        return self._book.uploaded(tenant, model)

    async def delete_version(self, tenant: str, model: str, version: int, over: int) -> None:
        await self._start()
        self._book.delete(tenant, model, version, over)
        self._models_changed_now(tenant, model)

    async def activate_version(self, tenant: str, model: str, version: int, over: int) -> None:
        await self._start()
        self._book.activate(tenant, model, version, over)
        self._models_changed_now(tenant, model)

    async def rollback_version(self, tenant: str, model: str, over: int) -> None:
        await self._start()
        self._book.rollback(tenant, model, over)
        self._models_changed_now(tenant, model)

    async def start_rollout(
        self,
        tenant: str,
        model: str,
        version: int,
        request: RolloutRequest,
        over: int,
        map50: dict[str, float] | None = None,
    ) -> None:
        await self._start()
        self._book.start_rollout(tenant, model, version, request, over, map50)
        self._models_changed_now(tenant, model)

    async def pause_rollout(self, tenant: str, model: str, paused: bool) -> int:
        await self._start()
        changed = self._book.pause(tenant, model, paused)
        self._models_changed_now(tenant, model)
        return changed

    async def rollout_observed(
        self, tenant: str, model: str, version: int, pairs: list[tuple[float, float, float]]
    ) -> str | None:
        """Pairs of answers from a router; the gate's decision, if it made one."""
        await self._start()
        decision = self._book.observe(tenant, model, version, pairs)
        totals = self._book.rollout(tenant, model, version)
        if totals is not None and totals.agreement is not None:
            self._rollout_metrics.record(
                tenant, f"{model}@{version}", totals.images, totals.agreement, totals.p95_ms
            )
        if decision is None:
            self._pairs += len(pairs)
            if self._pairs >= INDEX_EVERY_PAIRS:  # the operator's view of the totals
                self._pairs = 0
                self._models_changed_now(tenant, model)
            return None
        logger.info("ledger: rollout of %s/%s@%d %s", tenant, model, version, decision[1])
        self._models_changed_now(tenant, model)
        return decision[0]

    async def tenant_models(self, tenant: str) -> TenantModels:
        await self._start()
        return self._book.state(tenant)

    async def models_since(
        self, epoch: str, seq: int
    ) -> tuple[str, int, dict[str, TenantModels], bool]:
        """``(epoch, seq, states, everything)``: the states of the tenants changed after
        ``seq`` — or, for another epoch (a new leader), of every tenant with one."""
        await self._start()
        if epoch != self._models_epoch:
            tenants = self._book.tenants()
            return self._models_epoch, self._models_seq, self._states(tenants), True
        changed = [t for t, s in self._models_changed.items() if s > seq]
        return self._models_epoch, self._models_seq, self._states(changed), False

    def _states(self, tenants: list[str]) -> dict[str, TenantModels]:
        return {t: self._book.state(t) for t in tenants}
