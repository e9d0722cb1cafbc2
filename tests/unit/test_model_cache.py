from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from serve_app.errors import ModelLoadError
from serve_app.models.cache import WeightsCache


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_second_read_comes_from_disk(tmp_path):
    cache = WeightsCache(tmp_path)
    data = b"weights" * 1000
    calls = []
    assert cache.get_or_fetch(_sha(data), lambda: calls.append(1) or data) == data
    assert cache.get_or_fetch(_sha(data), lambda: calls.append(1) or data) == data
    assert calls == [1]


def test_wrong_bytes_are_not_cached(tmp_path):
    cache = WeightsCache(tmp_path)
    with pytest.raises(ModelLoadError, match="does not match"):
        cache.get_or_fetch(_sha(b"expected"), lambda: b"tampered")
    assert list(tmp_path.glob("*.bin")) == []


def test_corrupted_file_on_disk_is_fetched_again(tmp_path):
    cache = WeightsCache(tmp_path)
    data = b"abc" * 100
    cache.get_or_fetch(_sha(data), lambda: data)
    (tmp_path / f"{_sha(data)}.bin").write_bytes(b"bitrot")
    assert cache.get_or_fetch(_sha(data), lambda: data) == data


def test_size_bound_evicts_least_recently_used(tmp_path):
    import os

    cache = WeightsCache(tmp_path, max_bytes=250)
    blobs = [bytes([i]) * 100 for i in range(3)]
    for age, blob in enumerate(blobs):
        cache.get_or_fetch(_sha(blob), lambda b=blob: b)
        os.utime(tmp_path / f"{_sha(blob)}.bin", (1000 + age, 1000 + age))
    cache.evict()
    assert sorted(p.stem for p in tmp_path.glob("*.bin")) == sorted(_sha(b) for b in blobs[1:])


def _fetch_in_process(root: str, counter: str, data: bytes, out: str) -> None:
    def fetch() -> bytes:
        with open(counter, "a") as fh:
            fh.write("x")
        return data

    got = WeightsCache(Path(root)).get_or_fetch(_sha(data), fetch)
    Path(out).write_bytes(got)


def test_concurrent_replicas_fetch_once(tmp_path):
    data = bytes(range(256)) * 4000
    counter = tmp_path / "fetches"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_fetch_in_process,
            args=(str(tmp_path / "cache"), str(counter), data, str(tmp_path / f"out{i}")),
        )
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert counter.read_text() == "x"
    assert all((tmp_path / f"out{i}").read_bytes() == data for i in range(4))
