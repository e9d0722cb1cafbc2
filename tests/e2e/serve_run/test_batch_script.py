"""scripts/batch_detect.py against the cluster `serve run` started."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DEMO_KEY, ROOT, SAMPLES, ground_truth, matched_shapes


def _batch(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/batch_detect.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("mode", [[], ["--in-task"], ["--url", "http://127.0.0.1:8000"]],
                         ids=["driver", "ray-task", "http"])  # fmt: skip
def test_batch_writes_one_line_per_image(served, tmp_path, mode):
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "YOLOSERVE_API_KEY": DEMO_KEY}
    proc = _batch(str(SAMPLES), "-o", str(out), "--max-in-flight", "4", *mode, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s" in proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(ground_truth())
    assert all("result" in line and line["result"]["model"] == "shapes@1" for line in lines)
    assert sum(len(line["result"]["detections"]) for line in lines) >= 30
    assert DEMO_KEY not in proc.stdout + proc.stderr


def test_batch_without_a_key_says_how_to_give_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "YOLOSERVE_API_KEY"}
    proc = _batch(str(SAMPLES), env=env, timeout=120)
    assert proc.returncode == 2 and "YOLOSERVE_API_KEY" in proc.stderr


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server (a separate process) for this test only."""
    import boto3

    from tests.conftest import start_s3_server

    proc, url = start_s3_server(tmp_path)
    client = boto3.client("s3", endpoint_url=url, **_boto_credentials())
    yield {"url": url, "client": client}
    proc.terminate()
    proc.wait(timeout=30)


def _boto_credentials() -> dict[str, str]:
    from tests.conftest import S3_TEST_ENV

    return {
        "aws_access_key_id": S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_TEST_ENV["AWS_DEFAULT_REGION"],
    }


def test_batch_reads_images_from_s3_and_writes_results_to_s3(served, s3_server, tmp_path):
    # What configs/batch-job.rayjob.yaml runs on the cluster: S3 in, S3 out, key from a file.
    from tests.conftest import S3_TEST_ENV

    client = s3_server["client"]
    client.create_bucket(Bucket="batch")
    for path in sorted(SAMPLES.glob("shapes_*")):
        client.put_object(Bucket="batch", Key=f"incoming/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket="batch", Key="incoming/notes.txt", Body=b"not an image")
    client.put_object(Bucket="batch", Key="incoming/old/shapes_99.png", Body=b"nested: skipped")
    key_file = tmp_path / "api-key"
    key_file.write_text(DEMO_KEY + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if k != "YOLOSERVE_API_KEY"},
        **S3_TEST_ENV,
        "AWS_ENDPOINT_URL": s3_server["url"],
    }
    proc = _batch(
        "s3://batch/incoming/",
        "-o",
        "s3://batch/results/run.jsonl",
        "--api-key-file",
        str(key_file),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "-> s3://batch/results/run.jsonl" in proc.stdout
    body = client.get_object(Bucket="batch", Key="results/run.jsonl")["Body"].read().decode()
    lines = [json.loads(line) for line in body.splitlines()]
    truth = ground_truth()
    assert [line["file"] for line in lines] == sorted(truth)
    assert all(line["result"]["model"] == "shapes@1" for line in lines)
    for line in lines:  # each image's boxes are that image's shapes, not a neighbour's
        found = matched_shapes(truth[line["file"]], line["result"]["detections"])
        assert found >= len(truth[line["file"]]) - 1, line["file"]
    assert DEMO_KEY not in proc.stdout + proc.stderr
