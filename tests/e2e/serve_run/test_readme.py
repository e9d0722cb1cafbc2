"""The README's "Try it" commands, run as written against `make run`'s config: the demo
tenant's answer, acme's own model, globex's 404 for acme's model and its 429s, each
tenant's own usage, and Ray's own CLI with the one variable the README names."""

from __future__ import annotations

import json
import os
import re
import subprocess

from tests.conftest import ROOT, ground_truth, matched_shapes, wait_for

README = ROOT / "README.md"


def _try_it_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Try it") : text.index("## HTTP API")]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def _bash(script: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, f"{script}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_readme_has_three_try_it_blocks():
    assert len(_try_it_blocks()) == 3


def test_the_demo_tenants_answer(served):
    demo, _, _ = _try_it_blocks()
    answer = json.loads(_bash(demo))
    truth = ground_truth()["shapes_02.jpg"]
    assert answer["model"] == "shapes@1"
    assert matched_shapes(truth, answer["detections"]) == len(truth) == len(answer["detections"])


def test_two_more_tenants_isolation_quota_and_usage(served):
    _, tenants, _ = _try_it_blocks()
    lines = _bash(tenants).splitlines()
    acme = json.loads(lines[0])
    assert acme["model"] == "parts@1"
    assert [d["class_name"] for d in acme["detections"]] == ["triangle"]
    body, status = lines[1].rsplit(" ", 1)
    assert status == "404" and json.loads(body)["error"]["code"] == "unknown_model"
    burst = [line.split() for line in lines[2:6]]
    codes = [code for code, _ in burst]
    assert set(codes) <= {"200", "429"} and "429" in codes, burst
    assert all(wait == "retry-after=1" for code, wait in burst if code == "429"), burst
    usage = json.loads(lines[6])
    assert usage["monthly_quota"] == 500
    assert usage["remaining"] == 500 - usage["images_this_month"]
    assert usage["images_this_month"] >= codes.count("200")


def test_rays_own_cli_with_the_one_variable(served):
    *_, cli = _try_it_blocks()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    out = _bash(cli, env)
    assert re.search(r"yolo:\s+status: RUNNING", out), out
    assert "import_path: serve_app.app:build_app" in out
    assert "Sent deploy request successfully" in out

    def running() -> bool:
        status = _bash(".venv/bin/serve status", {**env, "RAY_AUTH_MODE": "token"})
        return re.search(r"yolo:\s+status: RUNNING", status) is not None

    wait_for(running, 120, "the redeployed application to run")
