"""Audit records and sinks (pure files), and tenantctl's control-plane lines."""

from __future__ import annotations

import json
import os
import time

from serve_app.observability.audit import AuditRecord, AuditSink

FIELDS = {
    "ts", "request_id", "tenant", "credential", "source_ip", "action", "model", "version",
    "outcome", "status", "latency_ms",
}  # fmt: skip


def test_a_crafted_value_cannot_break_or_forge_a_line(tmp_path):
    forged = 'x"}\n{"tenant": "victim", "action": "delete"}\r\u2028'
    record = AuditRecord.build(
        action="POST /v1/detect",
        outcome="ok",
        status=200,
        request_id=forged,
        tenant="acme",
        model="pcb@3",
        source_ip="10.0.0.7",
    )
    sink = AuditSink(tmp_path / "audit" / "api.jsonl")
    assert sink.write(record) and sink.write(record)
    lines = (tmp_path / "audit" / "api.jsonl").read_text().splitlines()
    assert len(lines) == 2
    parsed = json.loads(lines[0])
    assert set(parsed) == FIELDS
    assert parsed["request_id"] == forged and parsed["tenant"] == "acme"
    assert (parsed["model"], parsed["version"]) == ("pcb", "3")
    assert parsed["ts"].endswith("Z") and "T" in parsed["ts"]


def test_fields_are_capped_and_missing_ones_are_dashes():
    record = AuditRecord.build(action="a" * 5000, outcome="ok", status=200)
    assert len(record.action) == 200
    assert (record.tenant, record.credential, record.model, record.version) == ("-",) * 4


def test_a_flood_of_lines_is_rotated_and_capped_on_disk(tmp_path):
    folder = tmp_path / "audit"
    sink = AuditSink(folder / "api-r1.jsonl", max_bytes=4096, keep=2)
    for i in range(1000):
        record = AuditRecord.build(action="POST /v1/detect", outcome="ok", status=200,
                                   request_id=f"req-{i:04d}")  # fmt: skip
        assert sink.write(record)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["api-r1.1.jsonl", "api-r1.2.jsonl", "api-r1.jsonl"]
    assert all((folder / f).stat().st_size <= 4096 for f in files)
    lines = [json.loads(line) for line in (folder / "api-r1.jsonl").read_text().splitlines()]
    assert lines[-1]["request_id"] == "req-0999"  # the newest in the current file
    older = json.loads((folder / "api-r1.1.jsonl").read_text().splitlines()[-1])
    assert older["request_id"] == f"req-{int(lines[0]['request_id'][4:]) - 1:04d}"  # no gap
    # a sink started on an existing file counts what is there
    again = AuditSink(folder / "api-r1.jsonl", max_bytes=4096, keep=2)
    for _ in range(100):
        again.write(AuditRecord.build(action="GET /healthz", outcome="ok", status=200))
    assert (
        all(p.stat().st_size <= 4096 for p in folder.iterdir()) and len(list(folder.iterdir())) == 3
    )


def test_a_file_moved_or_deleted_by_someone_else_is_written_afresh(tmp_path, monkeypatch):
    from serve_app.observability import audit

    monkeypatch.setattr(audit, "AUDIT_RECHECK_S", 0.0)  # look at every write
    folder = tmp_path / "audit"
    sink = AuditSink(folder / "api.jsonl")
    record = AuditRecord.build(action="x", outcome="ok", status=200)
    assert sink.write(record)
    (folder / "api.jsonl").rename(folder / "api.jsonl.logrotated")  # an operator's rotation
    assert sink.write(record)
    assert len((folder / "api.jsonl").read_text().splitlines()) == 1  # a new file, not the old
    assert len((folder / "api.jsonl.logrotated").read_text().splitlines()) == 1
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()  # the whole folder gone
    assert sink.write(record)
    assert len((folder / "api.jsonl").read_text().splitlines()) == 1
    sink.close()


def test_an_unwritable_sink_counts_and_never_raises(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    sink = AuditSink(blocked / "audit.jsonl")  # a path under a regular file
    record = AuditRecord.build(action="x", outcome="ok", status=200)
    assert sink.write(record) is False and sink.write(record) is False
    assert sink.failures == 2


def test_tenantctl_audits_changes_not_reads_and_never_the_key(tmp_path, capsys, monkeypatch):
    from tenant_registry.cli import main

    log = tmp_path / "control.jsonl"
    monkeypatch.setenv("TENANTCTL_AUDIT_LOG", str(log))
    db = str(tmp_path / "r.db")
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0
    assert main(["--db", db, "key", "issue", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["--db", db, "tenant", "list"]) == 0  # a read: not audited
    assert main(["--db", db, "tenant", "create", "acme"]) == 4  # a conflict: audited
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["action"] for r in records] == [
        "tenantctl init",
        "tenantctl tenant create",
        "tenantctl key issue",
        "tenantctl tenant create",
    ]
    assert records[2]["tenant"] == "acme" and records[-1]["status"] == 409
    assert all(r["credential"].startswith("operator:") for r in records)
    assert key.startswith("yk_") and key not in log.read_text()


def test_tenantctl_with_an_unwritable_audit_log_still_works(tmp_path, capsys, monkeypatch):
    from tenant_registry.cli import main

    if os.geteuid() == 0:  # root writes anywhere: use a path under a regular file
        blocked = tmp_path / "file"
        blocked.write_text("")
        monkeypatch.setenv("TENANTCTL_AUDIT_LOG", str(blocked / "control.jsonl"))
    else:
        monkeypatch.setenv("TENANTCTL_AUDIT_LOG", "/proc/audit-not-here/control.jsonl")
    assert main(["--db", str(tmp_path / "r.db"), "init"]) == 0
    assert "audit log" in capsys.readouterr().err


def test_the_audited_address_is_an_ip_or_marked_invalid():
    from serve_app.http.calls import audited_address

    assert audited_address("203.0.113.7") == "203.0.113.7"
    assert audited_address("2001:db8::1") == "2001:db8::1"
    assert audited_address(None) is None
    for forged in ("<script>", "1.2.3.4, 5.6.7.8", "b" * 2000, "1.2.3.4\n{}", "::ffff:1.2.3.4x"):
        assert audited_address(forged) == "invalid"


def test_audit_timestamps_are_what_datetime_writes():
    import random
    from datetime import UTC, datetime

    from serve_app.wire import utc_iso

    moments = [0.0, 1.9999, 1138608000.4889996, 1764555555.9996, time.time()]
    moments += [random.uniform(0, 4e9) for _ in range(20000)]
    for t in moments:
        want = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
        assert utc_iso(t, "milliseconds") == want.replace("+00:00", "Z"), t
