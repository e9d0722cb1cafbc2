"""Soak: mixed load over three tenants for a long while, with an operator's changes in
the middle, watching every process's memory.

A registry with three tenants (``acme`` dedicated, ``globex`` and ``initech`` on the
shared pool), rendered and served by `make run` (scripts/run_local.sh: HAProxy, two
routers). ``--clients`` closed-loop HTTP clients go round the tenants with the demo
images at two sizes. Through the run, with ``tenantctl`` and ``tenantctl apply``, as an
operator would:

* at 40 %: **key rotation** — a new key for acme, applied, the clients switched to it,
  the old key revoked and applied (it must then be refused: 401);
* at 50 %: **model swap** — globex gets version 2 of its model, activated (answers must
  then name ``shapes@2``);
* at 60 %: **policy change** — initech's confidence floor raised to 0.5 (answers must
  then carry no detection below it).

Every ``--sample-s`` the RSS of every process of the run (its session: Ray, every
replica, HAProxy) is sampled, by role. Passes when no request failed, each change was
seen by the clients, every tenant's images billed (``GET /v1/usage``) equal the images
answered, and the total RSS grew less than ``--rss-limit`` (5 %) from the first sample
after the warm-up (``--warmup-s``) to the last.

    .venv/bin/python scripts/soak.py                                   # 20 minutes
    .venv/bin/python scripts/soak.py --minutes 2 --sample-s 10 --warmup-s 40

Prints the RSS table and one JSON line of figures (``--json`` writes it too); exit 0 when
it passed. Results: docs/reliability.md#soak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import psutil  # noqa: E402
import requests  # noqa: E402
from bench import IMAGES, _free_port, _wait  # noqa: E402
from chaos import emit  # noqa: E402
from local_run import BIN, local_run  # noqa: E402

TENANTS: dict[str, Literal["shared", "dedicated"]] = {
    "acme": "dedicated", "globex": "shared", "initech": "shared"
}  # fmt: skip
ROTATED, SWAPPED, POLICED = "acme", "globex", "initech"
NEW_CONF_FLOOR = 0.5
SIZES = (320, 640)
REQUEST_TIMEOUT_S = 60.0
DASHBOARD = "http://127.0.0.1:8265"  # scripts/run_local.sh's `ray start --head`
CHANGE_SEEN_S = 60.0  # a change applied must reach the clients' answers within this


def registry(work: Path, port: int) -> tuple[Path, dict[str, str]]:
    """A registry of the three tenants, sized for a 2-core machine; returns its path and
    each tenant's API key."""
    from serve_app.models.store import fetch_version
    from serve_app.wire import utc_iso
    from tenant_registry.records import ModelVersion
    from tenant_registry.store import Registry

    db = work / "registry.db"
    reg = Registry(db)
    p = reg.platform()
    cpu, one = {"num_cpus": 0.1}, {"min_replicas": 1, "max_replicas": 1}
    routers = {"min_replicas": 2, "max_replicas": 2}
    reg.set_platform(
        p.model_copy(update={
            "http_port": port,
            "router": p.router.model_copy(update={
                "resources": p.router.resources.model_copy(update=cpu),
                "autoscaling": p.router.autoscaling.model_copy(update=routers)}),
            "shared_pool": p.shared_pool.model_copy(update={
                "resources": p.shared_pool.resources.model_copy(update={"num_cpus": 0.25}),
                "autoscaling": p.shared_pool.autoscaling.model_copy(update=one)}),
            "dedicated_resources": p.dedicated_resources.model_copy(update={"num_cpus": 0.25}),
            "dedicated_autoscaling": p.dedicated_autoscaling.model_copy(update=one),
            "ledger": p.ledger.model_copy(update={
                "state_path": str(work / "ledger.db"), "usage_uri": f"file://{work}/usage"}),
            "audit_dir": str(work / "audit"),
            "model_store_uri": f"file://{work}/models",  # the tenant directory: ours
        })
    )  # fmt: skip
    uri = "file://models/demo/shapes/1"
    version = ModelVersion(
        version=1, uri=uri, architecture="yolov8n",
        sha256=fetch_version(uri).manifest.sha256, created_at=utc_iso(),
    )  # fmt: skip
    keys = {}
    for tenant, tier in TENANTS.items():
        reg.create_tenant(tenant, tenant.title(), tier, ("shapes", version))
        keys[tenant] = reg.issue_key(tenant)[1]
    return db, keys


def tenantctl(db: Path, *args: str) -> str:
    """One `tenantctl` command, as an operator runs it; its stdout."""
    done = subprocess.run(
        [str(BIN / "tenantctl"), "--db", str(db), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"tenantctl {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def apply(db: Path) -> None:
    """`tenantctl apply`, returning once the change is live on every replica."""
    tenantctl(db, "apply", "--address", DASHBOARD, "--wait", str(CHANGE_SEEN_S))


@dataclass
class Answer:
    at: float
    tenant: str
    status: str
    model: str = ""
    min_conf: float | None = None


@dataclass
class Load:
    """Closed-loop clients over the tenants; keys may be swapped while they run."""

    url: str
    keys: dict[str, str]
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    start: float = field(default_factory=time.monotonic)

    def client(self, k: int) -> None:
        images = [p.read_bytes() for p in IMAGES]
        tenants = list(TENANTS)
        session, i = requests.Session(), k
        while not self.stop.is_set():
            tenant = tenants[i % len(tenants)]
            with self.lock:
                key = self.keys[tenant]
            answer = self.send(session, tenant, key, images[i % len(images)], SIZES[i % 2])
            if answer.status not in ("200",):
                session = requests.Session()
            with self.lock:
                self.answers.append(answer)
            i += 1

    def send(
        self, session: requests.Session, tenant: str, key: str, image: bytes, imgsz: int
    ) -> Answer:
        at = time.monotonic() - self.start
        try:
            resp = session.post(self.url, data=image, params={"imgsz": imgsz},
                                headers={"Authorization": f"Bearer {key}"},
                                timeout=REQUEST_TIMEOUT_S)  # fmt: skip
        except requests.RequestException as exc:
            return Answer(at, tenant, type(exc).__name__)
        if resp.status_code != 200:
            return Answer(at, tenant, str(resp.status_code))
        body = resp.json()
        confs = [d["confidence"] for d in body["detections"]]
        return Answer(at, tenant, "200", body["model"], min(confs) if confs else None)

    def probe(self, session: requests.Session, tenant: str, key: str) -> str:
        """One request outside the loop (an operator checking a change); a 200 is an
        answered image like any other, a refusal is what the check expects."""
        answer = self.send(session, tenant, key, IMAGES[0].read_bytes(), SIZES[0])
        if answer.status == "200":
            with self.lock:
                self.answers.append(answer)
        return answer.status

    def since(self, t: float, tenant: str) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.at >= t and a.tenant == tenant]

    def now(self) -> float:
        return time.monotonic() - self.start


# ------------------------------------------------------------------------ memory


def role_of(cmdline: str, name: str) -> str:
    """A process's role in the run, from its title or command line."""
    if "ServeReplica:" in cmdline:
        return cmdline.split("ServeReplica:", 1)[1].split()[0].split(":")[-1]
    for mark, role in (("ServeController", "controller"), ("ProxyActor", "proxy"),
                       ("raylet", "raylet"), ("gcs_server", "gcs"), ("dashboard", "dashboard"),
                       ("log_monitor", "log_monitor"), ("ray::IDLE", "idle workers")):  # fmt: skip
        if mark in cmdline:
            return role
    return "haproxy" if name == "haproxy" else "other"


def sample_rss(session: int) -> dict[str, int]:
    """RSS (bytes) by role of every process in ``session`` (the run's process group)."""
    by_role: dict[str, int] = defaultdict(int)
    for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.info["pid"]) != session or proc.info["memory_info"] is None:
                continue
            role = role_of(" ".join(proc.info["cmdline"] or []), proc.info["name"] or "")
            by_role[role] += proc.info["memory_info"].rss
    return dict(by_role)


# ------------------------------------------------------------------------ changes


def rotate_key(db: Path, load: Load, probe: requests.Session) -> dict[str, Any]:
    """New key applied, clients switched to it, old key revoked and refused."""
    issued = json.loads(tenantctl(db, "key", "issue", ROTATED, "--json"))
    old_id = next(k for k in _key_ids(db, ROTATED) if k != issued["key_id"])
    apply(db)
    _wait(lambda: load.probe(probe, ROTATED, issued["api_key"]) == "200",
          CHANGE_SEEN_S, "the new key to be accepted")  # fmt: skip
    with load.lock:
        old_key = load.keys[ROTATED]
        load.keys[ROTATED] = issued["api_key"]
    tenantctl(db, "key", "revoke", old_id)
    apply(db)
    _wait(lambda: load.probe(probe, ROTATED, old_key) == "401",
          CHANGE_SEEN_S, "the old key to be refused")  # fmt: skip
    return {"old_key_refused": True}


def _key_ids(db: Path, tenant: str) -> list[str]:
    return [k["key_id"] for k in json.loads(tenantctl(db, "key", "list", tenant, "--json"))
            if k["revoked_at"] is None]  # fmt: skip


def swap_model(db: Path, load: Load) -> dict[str, Any]:
    at = load.now()
    tenantctl(db, "model", "add-version", SWAPPED, "shapes", "--uri",
              "file://models/demo/shapes/1", "--activate")  # fmt: skip
    apply(db)
    _wait(lambda: any(a.model == "shapes@2" for a in load.since(at, SWAPPED)),
          CHANGE_SEEN_S, "answers from version 2")  # fmt: skip
    return {"swapped_after_s": round(load.now() - at, 1)}


def change_policy(db: Path, load: Load) -> dict[str, Any]:
    at = load.now()
    tenantctl(db, "policy", "set", POLICED, "--conf", str(NEW_CONF_FLOOR))
    apply(db)

    def floor_holds() -> bool:  # the last few answers with detections all obey it
        confs = [a.min_conf for a in load.since(at, POLICED) if a.min_conf is not None][-5:]
        return len(confs) == 5 and min(confs) >= NEW_CONF_FLOOR

    _wait(floor_holds, CHANGE_SEEN_S, "answers under the new policy")
    return {"policy_after_s": round(load.now() - at, 1)}


# ------------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="yoloserve-soak-"))
    port = _free_port()
    db, keys = registry(work, port)
    config = work / "soak.yaml"
    tenantctl(db, "publish")  # the tenants the routers follow; the config names none
    config.write_text(tenantctl(db, "render"))
    base = f"http://127.0.0.1:{port}"
    seconds = args.minutes * 60
    figures: dict[str, Any] = {"minutes": args.minutes, "clients": args.clients, "events": {}}
    samples: list[tuple[float, dict[str, int]]] = []
    with local_run(config, base, work / "run.log") as served:
        session = os.getsid(served.proc.pid)
        load = Load(f"{base}/v1/detect", dict(keys))
        probe = requests.Session()
        threads = [threading.Thread(target=load.client, args=(k,), daemon=True)
                   for k in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        changes: list[tuple[float, str, Callable[[], dict[str, Any]]]] = [
            (0.4, "key_rotation", lambda: rotate_key(db, load, probe)),
            (0.5, "model_swap", lambda: swap_model(db, load)),
            (0.6, "policy_change", lambda: change_policy(db, load)),
        ]
        next_sample = 0.0
        while load.now() < seconds:
            if load.now() >= next_sample:
                samples.append((round(load.now()), sample_rss(session)))
                next_sample += args.sample_s
            if changes and load.now() >= changes[0][0] * seconds:
                _, name, change = changes.pop(0)
                figures["events"][name] = {"at_s": round(load.now()), **change()}
            time.sleep(0.2)
        samples.append((round(load.now()), sample_rss(session)))
        load.stop.set()
        for t in threads:
            t.join(REQUEST_TIMEOUT_S)
        figures.update(tally(load, base, args.settle_s))
    figures["rss"] = rss_figures(samples, args.warmup_s)
    figures["rss_samples"] = samples
    figures["passed"] = bool(
        not figures["failed"]
        and len(figures["events"]) == 3
        and all(figures["billed"][t] == figures["answered"][t] for t in TENANTS)
        and figures["rss"]["total_growth_pct"] < args.rss_limit
    )
    return figures


def tally(load: Load, base: str, settle_s: float) -> dict[str, Any]:
    """Failed requests, answers and images billed per tenant (once settled)."""
    with load.lock:
        answers = list(load.answers)
        keys = dict(load.keys)
    answered = Counter(a.tenant for a in answers if a.status == "200")
    failed = Counter(a.status for a in answers if a.status != "200")
    billed: dict[str, int] = {}

    def settled() -> bool:
        for tenant in TENANTS:
            resp = requests.get(f"{base}/v1/usage", timeout=10,
                                headers={"Authorization": f"Bearer {keys[tenant]}"})  # fmt: skip
            resp.raise_for_status()
            billed[tenant] = int(resp.json()["images_this_month"])
        return all(billed[t] == answered[t] for t in TENANTS)

    with contextlib.suppress(TimeoutError):
        _wait(settled, settle_s, "the usage to settle")
    return {"answered": dict(answered), "failed": dict(failed), "billed": billed}


def rss_figures(samples: list[tuple[float, dict[str, int]]], warmup_s: float) -> dict[str, Any]:
    """Growth from the first sample at or after the warm-up to the last, by role."""
    first = next(s for t, s in samples if t >= warmup_s)
    last = samples[-1][1]
    roles = sorted(set(first) | set(last))
    mib = 1024 * 1024
    by_role = {
        r: {"after_warmup_mib": round(first.get(r, 0) / mib, 1),
            "last_mib": round(last.get(r, 0) / mib, 1)}
        for r in roles
    }  # fmt: skip
    total_first, total_last = sum(first.values()), sum(last.values())
    return {
        "by_role": by_role,
        "total_after_warmup_mib": round(total_first / mib, 1),
        "total_last_mib": round(total_last / mib, 1),
        "total_growth_pct": round(100 * (total_last - total_first) / total_first, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=180.0)
    parser.add_argument(
        "--rss-limit", type=float, default=5.0, help="most RSS growth after the warm-up, in %%"
    )
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = run(args)
    print("| role | RSS after warm-up (MiB) | RSS at the end (MiB) |\n|---|---|---|")
    for role, row in figures["rss"]["by_role"].items():
        print(f"| {role} | {row['after_warmup_mib']} | {row['last_mib']} |")
    return emit(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
