"""A detector finds a tenant's uploaded version only once validation marked it."""

from __future__ import annotations

from serve_app.inference.model_sources import ModelSources
from serve_app.uploads_spec import VALIDATED_FILE, UploadsSpec, ValidatedMarker


def test_only_a_validated_upload_has_a_source(tmp_path):
    spec = UploadsSpec(uri=f"file://{tmp_path}")
    sources = ModelSources(spec)
    folder = tmp_path / "acme" / "pcb" / "3"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    assert sources.source("acme/pcb@3") is None  # uploaded, not (yet) validated
    (folder / VALIDATED_FILE).write_text(ValidatedMarker(sha256="c" * 64).model_dump_json())
    found = sources.source("acme/pcb@3")
    assert found is not None and found.sha256 == "c" * 64
    assert found.uri == spec.version_uri("acme", "pcb", 3)
    assert sources.source("other/pcb@3") is None  # another tenant's folder is another path
    (folder / VALIDATED_FILE).write_text("not json")
    assert sources.source("acme/pcb@3") is None
    assert ModelSources().source("acme/pcb@3") is None  # no uploads configured
