"""Faults under load: kill one process of the running platform, count what clients saw.

For each case: `make run` (scripts/run_local.sh: Ray with configs/ray-serve.env, HAProxy
in front) of the local config with a fresh ledger file, the demo tenant on two replicas
and the router on ``--routers``, ``--clients`` closed-loop HTTP clients for
``--seconds``, one process of the named role sent SIGKILL at ``--kill-at``; then

* failed requests (any answer but 200, or no answer), by status;
* the longest time without an answer (between two successful answers, or from the start);
* billed (``GET /v1/usage``: images this month) vs answered (200s, warm-up included),
  once the routers' settlements have reached the ledger.

    .venv/bin/python scripts/chaos.py                       # every role, the table
    .venv/bin/python scripts/chaos.py --roles detector --seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import psutil  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from bench import DEMO_KEY, IMAGES, _free_port, _wait  # noqa: E402
from local_run import local_run  # noqa: E402

# What to kill, by role: a pattern in the process's command line (Ray sets the process
# title of a replica to ServeReplica:<app>:<deployment>; a deployment's name does not
# match a longer one: quota-ledger is the primary ledger, not quota-ledger-standby).
_END = r"(?![-\w])"
MARKS = {
    "detector": r"ServeReplica:yolo:tenant-demo" + _END,
    "router": r"ServeReplica:yolo:router" + _END,
    "ledger": r"ServeReplica:yolo:quota-ledger" + _END,
    "ingress": r"/haproxy -db -f ",  # the HAProxy Ray runs (`haproxy -db -f CONFIG`)
    "understudy": r"/haproxy -D -p ",  # the second one (scripts/haproxy_understudy.sh)
    "proxy": r"ProxyActor" + _END,
    "controller": r"ServeController" + _END,
}
ROLES = ("none", "detector", "router", "ledger", "ingress", "understudy", "controller")
REQUEST_TIMEOUT_S = 30.0
AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


@dataclass
class Outcome:
    role: str
    answered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    longest_gap_s: float = 0.0
    billed: int | None = None
    killed_pid: int | None = None

    def row(self) -> str:
        failed = sum(self.failed.values())
        by = ", ".join(f"{n} x {s}" for s, n in sorted(self.failed.items()))
        billed = "—" if self.billed is None else (
            "equal" if self.billed == self.answered else f"billed {self.billed} vs {self.answered}"
        )  # fmt: skip
        return (
            f"| {self.role} | {failed} / {failed + self.answered}{f' ({by})' if by else ''} "
            f"| {self.longest_gap_s:.1f} s | {billed} |"
        )


def platform_config(routers: int, port: int, monthly_images: int | None = None) -> dict[str, Any]:
    """configs/serve.local.yaml for the run; with ``monthly_images`` the demo tenant has
    a monthly quota, so every request needs a ledger grant (the demo has no limits, and
    tenants without limits are admitted without one)."""
    raw: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "serve.local.yaml").read_text())
    if monthly_images is not None:
        [router] = [d for d in raw["applications"][0]["deployments"] if d["name"] == "router"]
        router["user_config"]["tenants"][0]["quota"] = {"monthly_images": monthly_images}
    raw["http_options"]["port"] = port
    args = raw["applications"][0]["args"]
    args["tenants"][0]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
    args["router"]["autoscaling"] = {"min_replicas": routers, "max_replicas": routers}
    args["ledger"] = {"resources": {"num_cpus": 0.1},
                      "state_path": str(Path(tempfile.mkdtemp()) / "ledger.db")}  # fmt: skip
    return raw


def pids_of(role: str) -> list[int]:
    mark = re.compile(MARKS[role])
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if mark.search(" ".join(proc.info["cmdline"] or [])):
            found.append(proc.info["pid"])
    return sorted(found)


def load(
    url: str, clients: int, seconds: float, kill: Callable[[Callable[[], int]], None]
) -> tuple[list[tuple[float, str]], int]:
    """``clients`` closed loops for ``seconds``; ``kill(answers)`` runs once while they
    do (``answers()``: how many have come back so far). Returns
    (answer time, status) per request, and how many were answered 200."""
    images = [p.read_bytes() for p in IMAGES]
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    results: list[tuple[float, str]] = []
    lock = threading.Lock()
    start = time.monotonic()
    end = start + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.monotonic() < end:
            try:
                resp = session.post(url, data=images[i % len(images)], headers=headers,
                                    params={"imgsz": 320}, timeout=REQUEST_TIMEOUT_S)  # fmt: skip
                status = str(resp.status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
                session = requests.Session()
            with lock:
                results.append((time.monotonic() - start, status))
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    kill(lambda: len(results))
    for t in threads:
        t.join()
    return results, sum(1 for _, s in results if s == "200")


def warm_up(url: str) -> int:
    """Four answers (billed too): each router and detector replica has its model loaded
    before the clock starts. Returns how many were 200."""
    warm = 0
    for image in IMAGES[:4]:
        r = requests.post(url, data=image.read_bytes(), params={"imgsz": 320},
                          headers=AUTH, timeout=60)  # fmt: skip
        warm += r.status_code == 200
    return warm


def emit(figures: dict[str, Any], path: Path | None) -> int:
    """Print the figures as one JSON line (and write them to ``path``); the exit status:
    0 if they passed."""
    line = json.dumps(figures)
    print(line, flush=True)
    if path is not None:
        path.write_text(line)
    return 0 if figures["passed"] else 1


def longest_gap(results: list[tuple[float, str]], seconds: float) -> float:
    times = sorted(t for t, s in results if s == "200")
    edges = [0.0, *times, max(seconds, times[-1] if times else seconds)]
    return max(b - a for a, b in itertools.pairwise(edges))


def usage(base: str) -> int:
    resp = requests.get(f"{base}/v1/usage", headers={"Authorization": f"Bearer {DEMO_KEY}"},
                        timeout=10)  # fmt: skip
    resp.raise_for_status()
    return int(resp.json()["images_this_month"])


def run_case(role: str, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(role)
    port = _free_port()
    work = Path(tempfile.mkdtemp())
    config = work / "chaos.yaml"
    config.write_text(yaml.safe_dump(platform_config(args.routers, port, args.monthly_images)))
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/detect"
    with local_run(config, base, work / "run.log"):
        warm = warm_up(url)

        def kill(_answers: Callable[[], int]) -> None:
            if role == "none":
                return
            time.sleep(args.kill_at)
            pids = pids_of(role)
            if not pids:
                print(f"  no {role} process found", flush=True)
                return
            outcome.killed_pid = pids[0]
            os.kill(pids[0], signal.SIGKILL)

        results, answered = load(url, args.clients, args.seconds, kill)
        outcome.answered = answered + warm
        outcome.failed = Counter(s for _, s in results if s != "200")
        outcome.longest_gap_s = longest_gap(results, args.seconds)
        billed: list[int] = []

        def settled() -> bool:
            # Routers bill allowances as they take them and refund what expires unused
            # (ALLOWANCE_TTL_S), settling with the ledger in the background.
            billed.append(usage(base))
            return billed[-1] == outcome.answered

        with contextlib.suppress(TimeoutError):
            _wait(settled, args.settle_s, "the usage to settle")
        outcome.billed = billed[-1] if billed else None
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", nargs="*", choices=ROLES, default=list(ROLES))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--kill-at", type=float, default=15.0)
    parser.add_argument("--routers", type=int, default=2)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--monthly-images", type=int, default=None,
                        help="give the demo tenant this monthly quota: every request then "
                        "needs a ledger grant")  # fmt: skip
    args = parser.parse_args()
    rows = []
    for role in args.roles:
        outcome = run_case(role, args)
        rows.append(outcome.row())
        print(rows[-1], flush=True)
    print("\n| killed | failed requests | longest time without an answer | billed vs answered |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
