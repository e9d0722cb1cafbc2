"""scripts/batch_detect.py against the cluster `serve run` started."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DEMO_KEY, ROOT, SAMPLES, ground_truth


@pytest.mark.parametrize("mode", [[], ["--in-task"]], ids=["driver", "ray-task"])
def test_batch_writes_one_line_per_image(served, tmp_path, mode):
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "YOLOSERVE_API_KEY": DEMO_KEY}
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/batch_detect.py",
            str(SAMPLES),
            "-o",
            str(out),
            "--max-in-flight",
            "4",
            *mode,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s" in proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(ground_truth())
    assert all("result" in line and line["result"]["model"] == "shapes@1" for line in lines)
    assert sum(len(line["result"]["detections"]) for line in lines) >= 30
    assert DEMO_KEY not in proc.stdout + proc.stderr


def test_batch_without_a_key_says_how_to_give_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "YOLOSERVE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "scripts/batch_detect.py", str(SAMPLES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "YOLOSERVE_API_KEY" in proc.stderr
