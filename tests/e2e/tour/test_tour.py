"""docs/tour.md, run as written: every ```bash block after a ``<!-- step: NAME -->`` marker,
in order, in one bash "terminal" (what a step exports, the next one sees), against a
literal `make run`; each step's output is checked against what the tour says it shows.

Liberties, all outside the commands' text: the clone step clones this checkout (its
``$REPO_URL``) into a temp folder, and the rest runs in this checkout, whose `.venv` the
test suite already built; `tenantctl` writes its registry to a temp file
(``$TENANTCTL_DB``), not the checkout's `var/registry.db`; Ray's token lives in a temp
file (``$RAY_AUTH_TOKEN_PATH``) that does not exist yet, as on a machine that never ran
Ray, so `make run` has to make it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from tests.conftest import ROOT, SAMPLES, ground_truth, matched_shapes, wait_for
from tests.e2e.console.conftest import browser  # noqa: F401  (headless Chromium)
from tests.e2e.console.test_console import _js, _sign_in, _table, _until, _upload

sys.path.insert(0, str(ROOT / "scripts"))
from local_run import local_run

TOUR = ROOT / "docs" / "tour.md"
URL = "http://127.0.0.1:8000"
KEYS = {"DEMO": "yk_demo_localonly", "ACME": "yk_acme_localonly", "GLOBEX": "yk_globex_localonly"}
STEP = re.compile(r"<!-- step: ([a-z-]+) -->\n```bash\n(.*?)```", re.S)
READY_TIMEOUT_S = 600  # the first `make run` on a fresh machine also checks the venv
STOP_TIMEOUT_S = 90


def tour_steps() -> list[tuple[str, str]]:
    return STEP.findall(TOUR.read_text())


class Terminal:
    """The tour's second terminal: each step in ``bash -eo pipefail``, starting with the
    variables the earlier steps set (exported or not), as one shell would."""

    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state = state
        self.env = env
        state.write_text("")
        fresh = subprocess.run(["bash", "-c", "compgen -v"], env=env, capture_output=True,
                               text=True, check=True)  # fmt: skip
        # a new shell's own variables are not saved, nor what bash sets per command
        self.builtin = " ".join([*fresh.stdout.split(), "PIPESTATUS", "BASH_REMATCH", "_"])

    def run(self, script: str, cwd: Path = ROOT, timeout_s: float = 300) -> str:
        save = (
            f'for name in $(compgen -v); do case " {self.builtin} " in *" $name "*) ;; '
            f'*) declare -p "$name";; esac; done >{self.state}'
        )
        wrapped = f"set -eo pipefail\nsource {self.state}\n{script}\n{save}\n"
        done = subprocess.run(
            ["bash", "-c", wrapped], cwd=cwd, env=self.env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"exit {done.returncode}:\n{script}\n{done.stderr[-3000:]}"
        return done.stdout

    def variable(self, name: str) -> str:
        out = subprocess.run(
            ["bash", "-c", f"source {self.state}; printf %s \"${name}\""],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]


def _usage(key: str) -> int:
    answer = requests.get(f"{URL}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["images_this_month"])


def _replica_pids(deployment: str = "") -> set[int]:
    wanted = f"ServeReplica:yolo:{deployment}"
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        if any(wanted in part for part in proc.info["cmdline"] or []):
            pids.add(proc.pid)
    return pids


def _detect(key: str, image: str = "shapes_01.png") -> dict:
    answer = requests.post(
        f"{URL}/v1/detect", data=(SAMPLES / image).read_bytes(),
        headers={"Authorization": f"Bearer {key}"}, timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_step_of_the_tour_has_a_check():
    names = [name for name, _ in tour_steps()]
    assert names == list(CHECKS), "docs/tour.md's steps and this test's checks differ"


def test_the_tour_runs_as_written(tmp_path, browser):  # noqa: F811
    # A machine that never ran Ray: no token where this run looks for one.
    token = tmp_path / "ray" / "auth_token"
    env = {**os.environ, "REPO_URL": str(ROOT), "TENANTCTL_DB": str(tmp_path / "registry.db"),
           "RAY_AUTH_TOKEN_PATH": str(token)}  # fmt: skip
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "DEMO", "ACME", "GLOBEX"):
        env.pop(name, None)
    terminal = Terminal(tmp_path / "terminal.sh", env)
    tour = dict(tour_steps())
    seen: dict[str, object] = {"tmp": tmp_path}

    clone_dir = tmp_path / "clone"
    clone_dir.mkdir()
    terminal.run(tour["clone"], cwd=clone_dir)
    assert (clone_dir / "yolo-serve" / "Makefile").is_file()
    assert (clone_dir / "yolo-serve" / "configs" / "serve.local.yaml").is_file()

    start = re.sub(r"#.*", "", tour["start"]).strip()
    assert start == "make run", tour["start"]
    log = tmp_path / "make-run.log"
    with local_run(
        ROOT / "configs" / "serve.local.yaml", URL, log, ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S, command=start.split(), env=env,
    ) as run:  # fmt: skip
        # `make run` made Ray's token, for this user only (and printed it nowhere).
        assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
        assert token.stat().st_mode & 0o777 == 0o600
        assert token.read_text() not in log.read_text()
        for name in list(CHECKS)[2:]:
            CHECKS[name](terminal, tour[name], seen, browser)
    assert run.stopped_in_time, f"`make run` took over {STOP_TIMEOUT_S} s to stop on Ctrl-C"
    assert not run.haproxy_survivors, f"HAProxy {run.haproxy_survivors} outlived `make run`"


# ------------------------------------------------------------------ the steps' checks


def _as_shipped() -> None:
    """acme on `parts@1`, as configs/serve.local.yaml ships it: a tour stopped half-way on
    this checkout leaves its activation in the ledger (var/), and a rollback undoes it."""
    auth = {"Authorization": f"Bearer {KEYS['ACME']}"}
    for _ in range(10):
        models = requests.get(f"{URL}/v1/models", headers=auth, timeout=30).json()["models"]
        if next(m for m in models if m["name"] == "parts")["active_version"] == 1:
            return
        undone = requests.post(f"{URL}/v1/models/parts/rollback", headers=auth, timeout=30)
        assert undone.status_code == 200, undone.text
    raise AssertionError("acme's parts could not be rolled back to version 1")


def _ready(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    assert json.loads(terminal.run(script, timeout_s=60)) == {"status": "ready"}
    _as_shipped()
    # the baseline for the usage step: what this month already counted (var/ persists)
    seen["usage"] = {who: _usage(key) for who, key in KEYS.items()}


def _keys(terminal: Terminal, script: str, _seen: dict, _browser) -> None:
    terminal.run(script)
    config = (ROOT / "configs" / "serve.local.yaml").read_text()
    for name, key in KEYS.items():
        assert terminal.variable(name) == f"Authorization: Bearer {key}"
        assert hashlib.sha256(key.encode()).hexdigest() in config
        assert key not in config.replace(f"`{key}`", "")


def _detect_step(terminal: Terminal, script: str, _seen: dict, _browser) -> None:
    demo, acme = _json_lines(terminal.run(script))
    truth = ground_truth()["shapes_01.png"]
    assert demo["model"] == "shapes@1" and acme["model"] == "parts@1"
    assert matched_shapes(truth, demo["detections"]) == len(truth)
    assert {d["class_name"] for d in demo["detections"]} == {"circle", "square", "triangle"}
    triangles = [d for d in demo["detections"] if d["class_name"] == "triangle"]
    assert [d["class_name"] for d in acme["detections"]] == ["triangle"] * len(triangles)
    for mine, theirs in zip(acme["detections"], triangles, strict=True):
        assert abs(mine["confidence"] - theirs["confidence"]) <= 0.01
        assert max(abs(a - b) for a, b in zip(mine["bbox"], theirs["bbox"], strict=True)) <= 1
        assert mine["confidence"] >= 0.5  # acme's default conf


def _isolation(terminal: Terminal, script: str, _seen: dict, _browser) -> None:
    body, status = terminal.run(script).rsplit(" ", 1)
    assert status.strip() == "404" and json.loads(body)["error"]["code"] == "unknown_model"


def _quota(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    lines = terminal.run(script).split()
    codes = [line for line in lines if line.isdigit()]
    waits = [line.split("=", 1)[1] for line in lines if line.startswith("retry-after=")]
    assert len(codes) == 4 and set(codes) <= {"200", "429"} and "429" in codes, lines
    assert all(int(wait) >= 1 for code, wait in zip(codes, waits, strict=True) if code == "429")
    seen["globex_images"] = codes.count("200")


def _usage_step(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    before = seen["usage"]
    expected = {"DEMO": 1, "ACME": 1, "GLOBEX": seen["globex_images"]}

    def counted() -> list[dict] | None:
        answers = _json_lines(terminal.run(script))
        got = {
            who: answer["images_this_month"] - before[who]  # type: ignore[index]
            for who, answer in zip(KEYS, answers, strict=True)
        }
        return answers if got == expected else None

    demo, acme, globex = wait_for(counted, 30, f"usage to count {expected}")
    assert demo["monthly_quota"] is None and acme["monthly_quota"] == 100000
    assert globex["monthly_quota"] == 500
    assert globex["remaining"] == 500 - globex["images_this_month"]
    assert sum(hour["rejected"] for hour in globex["hours"]) >= 4 - seen["globex_images"]


def _swap(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    pool = _replica_pids("shared-pool")
    assert pool, "no shared-pool replica process found"
    activated, answer = _json_lines(terminal.run(script, timeout_s=420))
    version = int(terminal.variable("v"))
    assert version >= 2 and activated == {"name": "parts", "versions": activated["versions"],
                                          "active_version": version}  # fmt: skip
    assert answer["model"] == f"parts@{version}"
    truth = ground_truth()["shapes_01.png"]
    assert matched_shapes(truth, answer["detections"]) == len(truth)  # all three shapes now
    assert _replica_pids("shared-pool") == pool, "a shared-pool replica restarted"
    seen["version"] = version


def _rollback(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    (answer,) = _json_lines(terminal.run(script))
    assert answer["active_version"] == 1 and seen["version"] in answer["versions"]
    assert _detect(KEYS["ACME"])["model"] == "parts@1"


def _metrics(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    wanted = {
        ("images", "demo", "shapes@1"), ("images", "acme", "parts@1"),
        ("images", "acme", f"parts@{seen['version']}"), ("images", "globex", "shapes@1"),
        ("429s", "globex", "rate_limited"),
    }  # fmt: skip

    counts = {
        ("images", "globex", "shapes@1"): seen["globex_images"],
        ("429s", "globex", "rate_limited"): 4 - seen["globex_images"],
    }

    def shown() -> dict | None:
        rows = [line.split() for line in terminal.run(script).splitlines()]
        series = {tuple(row[:3]): float(row[3]) for row in rows if len(row) == 4}
        if not wanted <= series.keys():
            return None
        return series if all(series[k] == v for k, v in counts.items()) else None

    wait_for(shown, 60, f"the metrics to show {sorted(wanted)} and globex's {counts}")


def _console(terminal: Terminal, script: str, _seen: dict, browser) -> None:  # noqa: F811
    assert terminal.run(script).strip() == "<title>Detection console</title>"
    # What the tour says to do there: sign in as acme, drop an image, see acme's boxes.
    _sign_in(browser, {"url": URL}, KEYS["ACME"])
    _until(browser, lambda: _js(browser, "document.body.dataset.state") == "idle", "sign-in")
    _upload(browser, SAMPLES / "shapes_01.png")
    rows = _table(browser)
    assert rows and all("triangle" in row for row in rows), rows


def _ray_cli(terminal: Terminal, script: str, _seen: dict, _browser) -> None:
    replicas = _replica_pids()
    refused = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "serve"), "status"], env=terminal.env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # The reason for the tour's `export`: without it Serve's CLI sends no token.
    assert refused.returncode != 0 and "RAY_AUTH_MODE" in refused.stdout + refused.stderr
    out = terminal.run(script)
    assert terminal.variable("RAY_AUTH_MODE") == "token"
    assert re.search(r"yolo:\s+status: RUNNING", out), out
    assert "tenant-demo:" in out and "shared-pool:" in out and "router:" in out
    assert "name: yolo" in out and "route_prefix: /" in out
    assert "Sent deploy request successfully" in out
    status = [str(ROOT / ".venv" / "bin" / "serve"), "status"]

    def running_again() -> bool:
        env = {**terminal.env, "RAY_AUTH_MODE": "token"}
        done = subprocess.run(status, env=env, capture_output=True, text=True, check=False)
        return re.search(r"yolo:\s+status: RUNNING", done.stdout) is not None

    wait_for(running_again, 120, "the redeployed application to run")
    assert _detect(KEYS["DEMO"])["model"] == "shapes@1"
    assert _replica_pids() == replicas, "deploying the same config restarted replicas"


def _operator(terminal: Terminal, script: str, seen: dict, _browser) -> None:
    out = terminal.run(script, timeout_s=420).splitlines()
    answer = json.loads(out[0])
    truth = ground_truth()["shapes_02.jpg"]
    assert answer["model"] == "shapes@1"
    assert matched_shapes(truth, answer["detections"]) == len(truth)
    body, status = out[1].rsplit(" ", 1)
    assert status == "401" and json.loads(body)["error"]["code"] == "unauthenticated"
    assert Path(terminal.env["TENANTCTL_DB"]).is_file()  # the registry, not the checkout's var/


CHECKS: dict[str, Callable[[Terminal, str, dict, object], None]] = {
    "clone": lambda *_: None,  # run before `make run` (above)
    "start": lambda *_: None,
    "ready": _ready,
    "keys": _keys,
    "detect": _detect_step,
    "isolation": _isolation,
    "quota": _quota,
    "usage": _usage_step,
    "swap": _swap,
    "rollback": _rollback,
    "metrics": _metrics,
    "console": _console,
    "ray-cli": _ray_cli,
    "operator": _operator,
}
