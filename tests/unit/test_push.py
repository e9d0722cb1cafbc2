"""Converting trusted .pt files, refusing untrusted ones, and checking pushes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import cv2
import pytest

from serve_app.models.store import fetch_version
from tenant_registry.cli import main
from tenant_registry.convert import convert_pt, max_box_difference
from tenant_registry.errors import InvalidInput
from tenant_registry.push import prepare
from tests.conftest import DEMO_MODEL, ROOT, SAMPLES


@pytest.fixture(scope="module")
def demo_pt(tmp_path_factory):
    """A real ultralytics checkpoint (a pickle) of the demo model, as a tenant has one."""
    from serve_app.models.loader import build_yolo

    demo = fetch_version("file://models/demo/shapes/1")
    path = tmp_path_factory.mktemp("pt") / "shapes.pt"
    build_yolo(demo.manifest, demo.weights).save(path)
    return path


class _Evil:
    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def evil(tmp_path):
    sentinel = tmp_path / "PWNED"
    payload = pickle.dumps(_Evil(str(sentinel)))
    (tmp_path / "evil.pt").write_bytes(payload)
    (tmp_path / "evil.safetensors").write_bytes(payload)
    return tmp_path, sentinel


def test_converted_weights_find_the_same_boxes(demo_pt):
    manifest, weights, original = convert_pt(demo_pt)
    assert manifest.architecture == "yolov8n"
    assert manifest.class_names == ["circle", "square", "triangle"]
    images = [cv2.imread(str(SAMPLES / n)) for n in ("shapes_01.png", "shapes_02.jpg")]
    assert max_box_difference(original, manifest, weights, images) <= 1.0


def test_converter_script_writes_a_pushable_folder(demo_pt, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/convert_weights.py",
            str(demo_pt),
            str(out),
            "--check-image",
            str(SAMPLES / "shapes_02.jpg"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest, weights = prepare(out)
    assert manifest.sha256 and len(weights) == manifest.size_bytes


def test_untrusted_pt_is_refused_without_being_opened(evil):
    folder, sentinel = evil
    with pytest.raises(InvalidInput, match=r"convert_weights\.py"):
        prepare(folder / "evil.pt")
    assert not sentinel.exists()


def test_a_pickle_renamed_to_safetensors_is_refused_and_never_run(evil):
    folder, sentinel = evil
    with pytest.raises(InvalidInput, match="not a valid safetensors"):
        prepare(folder / "evil.safetensors", arch="yolov8n", class_names=["a"])
    assert not sentinel.exists()


def test_operator_may_admit_a_trusted_pt(demo_pt):
    manifest, _ = prepare(demo_pt, trusted_pt=True)
    assert manifest.class_names == ["circle", "square", "triangle"]


def test_weights_that_do_not_fit_are_refused_before_upload():
    with pytest.raises(InvalidInput, match="do not fit architecture yolov8n with 5 classes"):
        prepare(DEMO_MODEL / "model.safetensors", arch="yolov8n", class_names=list("abcde"))
    with pytest.raises(InvalidInput, match="not allowed"):
        prepare(DEMO_MODEL / "model.safetensors", arch="resnet50", class_names=list("abc"))


def test_push_uploads_and_records_a_new_version(tmp_path, capsys):
    db, store = str(tmp_path / "r.db"), tmp_path / "store"
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--model-store-uri", f"file://{store}"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0
    assert main(["--db", db, "model", "push", "acme", "shapes", str(DEMO_MODEL), "--activate"]) == 0
    pushed = fetch_version(f"file://{store}/acme/shapes/2")
    assert pushed.weights == (DEMO_MODEL / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["--db", db, "model", "list", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["active_version"] == 2 and listed[0]["previous_version"] == 1
    assert (
        main(["--db", db, "model", "push", "acme", "shapes", str(DEMO_MODEL / "manifest.json")])
        == 2
    )


def test_two_concurrent_pushes_get_two_versions_and_keep_their_own_files(tmp_path, monkeypatch):
    """Both pushes reach the upload before either records its version (a barrier): each
    must still upload under its own number, and each recorded version's files are its own."""
    import shutil
    import threading

    from tenant_registry import push as push_module
    from tenant_registry.store import Registry

    db, store = str(tmp_path / "r.db"), tmp_path / "store"
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--model-store-uri", f"file://{store}"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0
    sources = {}
    for names in (["red", "green", "blue"], ["cat", "dog", "bird"]):
        folder = tmp_path / names[0]
        shutil.copytree(DEMO_MODEL, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "class_names": names}))
        sources[names[0]] = folder
    both_uploading = threading.Barrier(2, timeout=30)
    real_upload = push_module.upload

    def upload(*args, **kwargs):
        both_uploading.wait()
        return real_upload(*args, **kwargs)

    monkeypatch.setattr(push_module, "upload", upload)
    pushed, errors = {}, []

    def push(name):
        try:
            with Registry(db) as reg:
                version, _ = push_module.push_version(reg, "acme", "shapes", sources[name])
                pushed[name] = version
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(name,)) for name in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(v.version for v in pushed.values()) == [2, 3]  # 1: created with the tenant
    for name, version in pushed.items():
        files = fetch_version(version.uri)
        assert files.manifest.class_names[0] == name  # its own files, not the other push's
    with Registry(db) as reg:
        assert reg.next_version("acme", "shapes") == 4  # no reservation left behind


def test_a_failed_upload_gives_its_version_number_back(tmp_path, monkeypatch):
    from tenant_registry import push as push_module
    from tenant_registry.store import Registry

    db = str(tmp_path / "r.db")
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--model-store-uri", f"file://{tmp_path}/s"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0

    def broken(*_args, **_kwargs):
        raise InvalidInput("upload to the store failed: disk full")

    monkeypatch.setattr(push_module, "upload", broken)
    with Registry(db) as reg:
        with pytest.raises(InvalidInput, match="disk full"):
            push_module.push_version(reg, "acme", "shapes", DEMO_MODEL)
        assert reg.next_version("acme", "shapes") == 2
        assert [v.version for v in reg.model("acme", "shapes").versions] == [1]
