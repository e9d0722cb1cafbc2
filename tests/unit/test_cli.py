"""tenantctl driven in-process (no cluster): output, --json, exit codes, messages."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from serve_app.auth.keys import hash_api_key
from tenant_registry.cli import main


@pytest.fixture
def ctl(tmp_path, capsys):
    db = str(tmp_path / "r.db")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--db", db, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("init")[0] == 0
    # the tenant directory `publish` writes: in the test's folder, not the repository's
    assert run("platform", "set", "--model-store-uri", f"file://{tmp_path}/models")[0] == 0
    return run


def _published(ctl, tmp_path) -> tuple[dict, str]:
    """``tenantctl publish``, then what a router reads: the records, and the raw files."""
    from serve_app.blobs import FileStore
    from serve_app.directory import DirectoryView

    assert ctl("publish")[0] == 0
    folder = tmp_path / "models" / "_directory"
    view = DirectoryView()
    view.refresh(FileStore(folder))
    raw = "".join(f.read_text() for f in sorted(folder.iterdir()))
    return {t: r.entry for t, r in view.records.items()}, raw


def test_onboarding_commands(ctl, tmp_path):
    assert ctl("tenant", "create", "acme", "--name", "Acme Corp")[0] == 0
    code, key, err = ctl("key", "issue", "acme")
    assert code == 0 and key.strip().startswith("yk_") and "shown once" in err
    code, out, _ = ctl("tenant", "list", "--json")
    tenants = json.loads(out)
    assert [(t["id"], t["tier"], t["status"]) for t in tenants] == [("acme", "shared", "active")]
    assert hash_api_key(key.strip()) not in out and key.strip() not in out  # no key material
    assert tenants[0]["keys"][0]["prefix"] == key.strip()[:8] + "…"
    code, out, _ = ctl("model", "list", "acme", "--json")
    assert json.loads(out)[0]["versions"][0]["architecture"] == "yolov8n"
    entries, raw = _published(ctl, tmp_path)
    assert entries["acme"].model("shapes").active_version == 1
    assert key.strip() not in raw and hash_api_key(key.strip()) in raw  # the digest only


def test_control_characters_never_reach_the_terminal(ctl, tmp_path):
    """Text from outside the registry (here a usage export whose model label clears the
    screen, forges a line and reverses the text) is printed as visible escapes; --json
    keeps the exact string."""
    from serve_app.quota.usage import UsageCounts, UsageRow, usage_lines

    label = "m@1\x1b[2J\rroot ok\u202eelif\x9b"
    folder = tmp_path / "usage" / "2026-11"
    folder.mkdir(parents=True)
    row = UsageRow("acme", "2026-11-18T08", label, UsageCounts(3, 2, 0.05, 1, 0))
    (folder / "e-1-1.jsonl").write_text("".join(usage_lines([row])))
    assert ctl("platform", "set", "--usage-uri", f"file://{tmp_path / 'usage'}")[0] == 0
    code, out, err = ctl("usage", "--month", "2026-11", "--csv")
    assert code == 0 and "acme" in out
    assert not any(c in out + err for c in "\x1b\r\u202e\x9b")
    assert "\\x1b[2J\\x0droot ok\\u202eelif\\x9b" in out
    code, out, _ = ctl("usage", "--month", "2026-11", "--json")
    assert json.loads(out)[0]["model"] == label


def test_errors_name_the_fix_and_exit_non_zero(ctl):
    code, _, err = ctl("tenant", "show", "ghost")
    assert code == 3 and "tenant list" in err
    code, _, err = ctl("tenant", "create", "Bad Id")
    assert code == 2 and "lowercase" in err
    ctl("tenant", "create", "acme")
    code, _, err = ctl("tenant", "create", "acme")
    assert code == 4 and "already exists" in err
    code, _, err = ctl("tenant", "delete", "acme")
    assert code == 2 and "--yes" in err
    code, _, err = ctl("quota", "set", "acme")
    assert code == 2 and "--requests-per-s" in err
    code, _, err = ctl("model", "add-version", "acme", "pcb", "--uri", "file:///nonexistent/1")
    assert code == 2 and "not usable" in err


def test_quota_policy_resources_and_models(ctl):
    ctl("tenant", "create", "acme", "--tier", "dedicated")
    assert ctl("quota", "set", "acme", "--requests-per-s", "5", "--monthly-images", "none")[0] == 0
    assert (
        ctl("policy", "set", "acme", "--allowed-classes", "circle,square", "--conf", "0.4")[0] == 0
    )
    assert ctl("resources", "set", "acme", "--num-gpus", "0.25", "--min-replicas", "0")[0] == 0
    assert (
        ctl("model", "add-version", "acme", "shapes", "--uri", "file://models/demo/shapes/1")[0]
        == 0
    )
    assert ctl("model", "activate", "acme", "shapes", "2")[0] == 0
    assert ctl("model", "rollback", "acme", "shapes")[0] == 0
    show = json.loads(ctl("tenant", "show", "acme", "--json")[1])
    assert show["quota"]["requests_per_s"] == 5.0 and show["quota"]["monthly_images"] is None
    assert show["policy"]["allowed_classes"] == ["circle", "square"]
    assert show["resources"]["num_gpus"] == 0.25 and show["autoscaling"]["min_replicas"] == 0
    assert show["models"][0]["active_version"] == 1 and len(show["models"][0]["versions"]) == 2
    policy = json.loads(ctl("policy", "show", "acme", "--json")[1])
    assert policy == {"policy": show["policy"]}  # the tenant's own defaults need --cluster


def test_validate_checks_hand_written_files(ctl, tmp_path):
    from tests.conftest import ROOT

    assert ctl("validate", str(ROOT / "configs" / "serve.local.yaml"))[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "configs" / "serve.local.yaml")
        .read_text()
        .replace("target_ongoing_requests: 4", "target_ongoing_request: 4")
    )
    code, _, err = ctl("validate", str(bad))
    assert code == 2 and "target_ongoing_request" in err


def test_apply_without_a_cluster_says_how_to_start_one(ctl):
    code, _, err = ctl("apply", "--address", "http://127.0.0.1:9")
    assert code == 5 and "ray start --head" in err


def test_jwt_settings_and_minted_tokens_round_trip(ctl, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from serve_app.auth.tenants import TenantTable
    from serve_app.config import RouterConfig

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "op.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "op.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ctl("tenant", "create", "acme")
    code, _, err = ctl("token", "mint", "acme", "--private-key", str(tmp_path / "op.key"))
    assert code == 2 and "jwt set" in err
    assert (
        ctl(
            "jwt",
            "set",
            "acme",
            "--issuer",
            "https://yolo.test/acme",
            "--audience",
            "yolo",
            "--alg",
            "ES256",
            "--public-key",
            str(tmp_path / "op.pub"),
        )[0]
        == 0
    )
    code, token, _ = ctl(
        "token",
        "mint",
        "acme",
        "--private-key",
        str(tmp_path / "op.key"),
        "--subject",
        "nightly",
        "--ttl",
        "60",
    )
    assert code == 0 and token.count(".") == 2
    entries, raw = _published(ctl, tmp_path)
    assert "BEGIN PRIVATE KEY" not in raw and "https://yolo.test/acme" in raw
    table = TenantTable(RouterConfig(tenants=list(entries.values())))
    assert asyncio.run(table.authenticate(token.strip())).tenant.id == "acme"
    code, _, err = ctl(
        "token", "mint", "acme", "--private-key", str(tmp_path / "op.key"), "--ttl", "999999"
    )
    assert code == 2 and "short-lived" in err
    ctl("tenant", "create", "bob")
    code, _, err = ctl(
        "jwt",
        "set",
        "bob",
        "--issuer",
        "https://yolo.test/acme",
        "--audience",
        "y",
        "--public-key",
        str(tmp_path / "op.pub"),
    )
    assert code == 4 and "another tenant" in err


def test_jwt_keys_can_come_from_a_jwks_url(ctl, tmp_path):
    ctl("tenant", "create", "acme")
    base = ("jwt", "set", "acme", "--issuer", "https://idp.acme.test", "--audience", "yolo")
    code, _, err = ctl(*base, "--jwks-url", "http://idp.acme.test/jwks")
    assert code == 2 and "https" in err
    code, _, err = ctl(*base, "--jwks-url", "https://idp.acme.test/.well-known/jwks.json")
    assert code == 0 and "JWKS https://idp.acme.test/.well-known/jwks.json" in err
    entries, _ = _published(ctl, tmp_path)
    jwt = entries["acme"].jwt
    assert jwt is not None and jwt.jwks_url == "https://idp.acme.test/.well-known/jwks.json"
    assert not jwt.public_keys_pem
    code, _, err = ctl("jwt", "set", "acme", "--jwks-url", "")
    assert code == 2 and "public_keys_pem, jwks_url" in err  # would leave no keys at all


def test_key_list_shows_ids_and_prefixes_never_keys(ctl):
    ctl("tenant", "create", "acme")
    code, key, _ = ctl("key", "issue", "acme")
    assert code == 0
    code, listing, _ = ctl("key", "list", "acme", "--json")
    assert code == 0
    [entry] = json.loads(listing)
    assert entry["key_id"].startswith("key_") and key.strip().startswith(entry["prefix"][:-1])
    assert key.strip() not in listing and "sha256" not in entry
    assert entry["last_used_at"] is None  # only the cluster knows; see tests/security


def test_platform_set_turns_the_tenant_directory_on_and_off(tmp_path, capsys):
    from tenant_registry.store import Registry

    db = str(tmp_path / "r.db")
    with Registry(db) as reg:
        assert reg.platform().tenant_directory is True  # on unless turned off
    assert main(["--db", db, "platform", "set", "--tenant-directory", "off"]) == 0
    with Registry(db) as reg:
        assert reg.platform().tenant_directory is False
    capsys.readouterr()
    assert main(["--db", db, "publish"]) == 2  # nothing to publish to
    assert "tenant directory is off" in capsys.readouterr().err
    assert main(["--db", db, "platform", "set", "--tenant-directory", "on"]) == 0
    with Registry(db) as reg:
        assert reg.platform().tenant_directory is True
    with pytest.raises(SystemExit):
        main(["--db", db, "platform", "set", "--tenant-directory", "maybe"])
    assert "say on or off" in capsys.readouterr().err


def test_publish_writes_only_changed_tenants_and_render_names_none_of_them(ctl, tmp_path):
    for tenant in ("acme", "bob"):
        ctl("tenant", "create", tenant)
        ctl("key", "issue", tenant)
    code, _, err = ctl("publish")
    assert code == 0 and "all tenants" in err  # the first publish: a snapshot
    ctl("tenant", "suspend", "bob")
    code, _, err = ctl("publish")
    assert code == 0 and "1 changed tenants" in err
    entries, _ = _published(ctl, tmp_path)
    assert (entries["acme"].status, entries["bob"].status) == ("active", "suspended")
    code, rendered, _ = ctl("render")
    router = yaml.safe_load(rendered)["applications"][0]["deployments"][0]["user_config"]
    assert router["tenants"] == [] and "acme" not in rendered and "bob" not in rendered


def test_a_rayservice_is_refused_while_the_directory_is_on_a_pods_own_disk(ctl):
    code, _, err = ctl("render", "--format", "rayservice")
    assert code == 2 and "each pod's own disk" in err and "s3://" in err
    assert ctl("platform", "set", "--model-store-uri", "s3://bucket/models")[0] == 0
    code, manifest, _ = ctl("render", "--format", "rayservice")
    assert code == 0 and "s3://bucket/models/_directory" in manifest
