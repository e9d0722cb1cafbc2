"""Box agreement, mAP50, the rollout gate, the catalog overlay and the ledger's book of
tenants' own versions (issue 21), without Ray."""

from __future__ import annotations

import pytest

from serve_app.config import TenantEntry, TenantModel
from serve_app.errors import Conflict, QuotaExceeded, UnknownModel
from serve_app.models.agreement import box_agreement, iou
from serve_app.models.evaluation import average_precision, map50
from serve_app.models.rollout import RolloutRequest, judge, p95
from serve_app.models.versions import ModelState, TenantModels, overlay, rollout_of
from serve_app.quota.model_book import ModelBook
from serve_app.uploads_spec import UploadsSpec

BOX = (0.0, 0.0, 10.0, 10.0)


def test_iou_of_known_boxes():
    assert iou(BOX, BOX) == 1.0
    assert iou(BOX, (5.0, 0.0, 15.0, 10.0)) == pytest.approx(50 / 150)
    assert iou(BOX, (20.0, 20.0, 30.0, 30.0)) == 0.0


def test_agreement_is_per_class_f1_by_name():
    assert box_agreement([], []) == 1.0
    assert box_agreement([("cat", BOX)], [("cat", (1.0, 0.0, 11.0, 10.0))]) == 1.0
    # same box, another name: both classes score 0
    assert box_agreement([("cat", BOX)], [("dog", BOX)]) == 0.0
    # cat: 1 of 2 matched (F1 2/3); dog: missing in the candidate (0)
    incumbent = [("cat", BOX), ("cat", (50.0, 50.0, 60.0, 60.0)), ("dog", BOX)]
    assert box_agreement(incumbent, [("cat", BOX)]) == pytest.approx((2 / 3 + 0) / 2)
    # a box overlapping under IoU 0.5 does not match
    assert box_agreement([("cat", BOX)], [("cat", (6.0, 0.0, 16.0, 10.0))]) == 0.0


def test_average_precision_and_map50():
    assert average_precision([(0.9, True), (0.8, True)], 2) == 1.0
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1
    assert average_precision([(0.9, False), (0.8, True), (0.7, True)], 2) == pytest.approx(2 / 3)
    labels = [[("cat", BOX)], [("dog", BOX)]]
    assert map50([[("cat", 0.9, BOX)], [("dog", 0.8, BOX)]], labels) == 1.0
    assert map50([[("dog", 0.9, BOX)], [("cat", 0.8, BOX)]], labels) == 0.0


def test_gate_waits_then_promotes_or_stops_with_the_numbers():
    wanted = RolloutRequest(mode="shadow", percent=10, min_images=3, min_agreement=0.9)
    assert judge(wanted, 2, 2.0, [10, 10], [10, 10]) is None
    state, reason = judge(wanted, 3, 2.85, [10, 10, 10], [12, 12, 12])  # type: ignore[misc]
    assert state == "promoted" and "box agreement 0.950 over 3 images" in reason
    state, reason = judge(wanted, 3, 1.5, [10] * 3, [10] * 3)  # type: ignore[misc]
    assert state == "stopped" and "0.500" in reason and "boxes differ" in reason
    state, reason = judge(wanted, 3, 3.0, [10] * 3, [16] * 3)  # type: ignore[misc]
    assert state == "stopped" and "too slow" in reason and "16.0 ms" in reason
    assert p95(list(range(1, 101))) == 95


def _entry() -> TenantEntry:
    return TenantEntry(
        id="acme", name="Acme", models=[TenantModel(name="pcb", versions=[1, 2], active_version=2)],
        default_model="pcb", tier="shared",
    )  # fmt: skip


def test_overlay_adds_ready_uploads_and_the_tenants_activation_while_it_holds():
    entry = _entry()
    state = TenantModels(models={"pcb": ModelState(ready=[3], active=3, over=2)})
    model = overlay(entry, state).model("pcb")
    assert model is not None and model.versions == [1, 2, 3]
    assert model.active_version == 3 and model.fallback_version == 2
    # the operator activated another version since: the tenant's choice lapses
    moved = entry.model_copy(
        update={"models": [TenantModel(name="pcb", versions=[1, 2], active_version=1)]}
    )
    assert overlay(moved, state).model("pcb").active_version == 1  # type: ignore[union-attr]
    assert overlay(entry, TenantModels()) is entry


def test_rollout_applies_only_to_a_callable_candidate_that_is_not_active():
    entry = _entry()
    running = TenantModels(models={"pcb": ModelState(ready=[3], rollout=3, percent=50)})
    assert rollout_of(overlay(entry, running), running, "pcb") is not None
    assert rollout_of(entry, running, "pcb") is None  # not in the catalog (not ready)
    done = TenantModels(models={"pcb": ModelState(ready=[3], active=3, over=2, rollout=3)})
    assert rollout_of(overlay(entry, done), done, "pcb") is None
    paused = TenantModel(name="pcb", versions=[1, 2], active_version=2, rollouts_paused=True)
    braked = entry.model_copy(update={"models": [paused]})  # the operator's brake
    assert rollout_of(overlay(braked, running), running, "pcb") is None


def test_book_numbers_limits_and_decides(tmp_path):
    book = ModelBook(tmp_path / "ledger.db")
    spec = UploadsSpec(per_hour=3, max_versions=2)
    first = book.begin("acme", "pcb", 2, "a" * 64, 10, spec)
    assert first == 3
    assert book.begin("acme", "pcb", 2, "b" * 64, 10, spec) == 4
    with pytest.raises(QuotaExceeded, match="keeps 2 uploaded versions"):
        book.begin("acme", "pcb", 2, "c" * 64, 10, spec)
    book.delete("acme", "pcb", 4, 2)
    with pytest.raises(UnknownModel):
        book.record("acme", "pcb", 4)
    assert book.begin("acme", "pcb", 2, "c" * 64, 10, spec) == 5  # numbers are never reused
    with pytest.raises(QuotaExceeded, match="3 model uploads per hour") as refused:
        book.begin("acme", "pcb", 2, "d" * 64, 10, spec)
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 3000
    with pytest.raises(UnknownModel):  # another tenant's version is not there
        book.record("other", "pcb", 3)

    book.finish("acme", "pcb", 3, "ready", None, {"load_s": 0.5})
    assert book.state("acme").models["pcb"].ready == [3]
    book.start_rollout("acme", "pcb", 3, RolloutRequest(mode="canary", percent=5, min_images=2), 2)
    assert book.observe("acme", "pcb", 3, [(1.0, 10.0, 11.0)]) is None
    decided = book.observe("acme", "pcb", 3, [(1.0, 10.0, 11.0)])
    assert decided is not None and decided[0] == "promoted"
    state = book.state("acme").models["pcb"]
    assert (state.active, state.over, state.rollout) == (3, 2, None)
    assert book.record("acme", "pcb", 3).rollout.state == "promoted"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="is the active version"):  # whatever a router thinks
        book.delete("acme", "pcb", 3, 2)
    book.rollback("acme", "pcb", 2)
    assert book.state("acme").models["pcb"].active is None
    with pytest.raises(Conflict, match="nothing to roll back"):
        book.rollback("acme", "pcb", 2)


def test_book_stops_a_disagreeing_rollout_and_rejects_the_version(tmp_path):
    book = ModelBook(tmp_path / "ledger.db")
    version = book.begin("acme", "pcb", 1, "a" * 64, 10, UploadsSpec())
    book.finish("acme", "pcb", version, "ready")
    book.start_rollout(
        "acme", "pcb", version, RolloutRequest(mode="shadow", percent=5, min_images=2), 1
    )
    assert book.pause("acme", "pcb", True) == 1
    assert book.observe("acme", "pcb", version, [(0.0, 1.0, 1.0)] * 5) is None  # paused: dropped
    book.pause("acme", "pcb", False)
    decided = book.observe("acme", "pcb", version, [(0.2, 1.0, 1.0), (0.4, 1.0, 1.0)])
    assert decided is not None and decided[0] == "stopped"
    record = book.record("acme", "pcb", version)
    assert record.status == "rejected" and "box agreement 0.300 over 2 images" in (
        record.reason or ""
    )


def test_book_refuses_a_candidate_worse_on_the_samples_at_once(tmp_path):
    book = ModelBook(tmp_path / "ledger.db")
    version = book.begin("acme", "pcb", 1, "a" * 64, 10, UploadsSpec())
    book.finish("acme", "pcb", version, "ready")
    wanted = RolloutRequest(mode="shadow", percent=5, require_map50=True)
    book.start_rollout("acme", "pcb", version, wanted, 1, {"candidate": 0.4, "incumbent": 0.8})
    record = book.record("acme", "pcb", version)
    assert record.status == "rejected" and "mAP50 0.400" in (record.reason or "")
    assert record.rollout is not None and record.rollout.state == "stopped"
    assert record.rollout.map50 == {"candidate": 0.4, "incumbent": 0.8}
    assert book.state("acme").models.get("pcb") is None  # nothing to route
