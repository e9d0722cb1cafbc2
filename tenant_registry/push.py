"""``tenantctl model push``: check a tenant's weights here, then upload them.

Accepted: a converter output folder (``manifest.json`` + ``model.safetensors``), a
``.safetensors`` file with ``--arch`` and ``--class-names``, or an ``.onnx`` file with
``--class-names`` (run by ONNX Runtime). A ``.pt`` is a pickle
and is refused with the way to convert it, unless the operator passes
``--trusted-pt`` for a file they vouch for. Whatever is accepted is rebuilt on the
allowlisted YAML and loaded strictly before a byte is uploaded, so most broken
uploads never reach the store; the replicas check everything again anyway.
"""

from __future__ import annotations

from pathlib import Path

from serve_app.blobs import open_store
from serve_app.config import StoreSettings
from serve_app.constants import MANIFEST_FILE, MAX_WEIGHTS_BYTES
from serve_app.errors import ModelLoadError
from serve_app.models import engine
from serve_app.models.manifest import ModelManifest, build_manifest, parse_manifest, verify_weights
from serve_app.wire import utc_iso
from tenant_registry import uploads
from tenant_registry.errors import InvalidInput
from tenant_registry.records import ModelVersion, validate_model_name
from tenant_registry.store import Registry

PT_REFUSED = (
    "{name} is a pickled PyTorch checkpoint; tenant .pt files are never loaded on the platform. "
    "Convert it on your own machine: `python scripts/convert_weights.py {name} out/`, then "
    "`tenantctl model push TENANT MODEL out/`"
)


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise InvalidInput(f"{path.name} is {size} bytes; the limit is {MAX_WEIGHTS_BYTES}")
    return path.read_bytes()


def prepare(
    path: Path,
    *,
    arch: str | None = None,
    class_names: list[str] | None = None,
    imgsz: int | None = None,
    trusted_pt: bool = False,
) -> tuple[ModelManifest, bytes]:
    """The manifest and weights to upload for ``path``, checked end to end."""
    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    try:
        if path.is_dir():
            manifest = parse_manifest(_read(path / MANIFEST_FILE))
            weights = _read(path / manifest.weights_file)
            verify_weights(manifest, weights)
        elif path.suffix == ".pt":
            if not trusted_pt:
                raise InvalidInput(PT_REFUSED.format(name=path.name))
            from tenant_registry.convert import convert_pt

            manifest, weights, _ = convert_pt(path, arch, imgsz)
        elif path.suffix == ".safetensors":
            if not arch or not class_names:
                raise InvalidInput(
                    "a bare .safetensors needs --arch and --class-names (or push the folder "
                    "scripts/convert_weights.py wrote)"
                )
            weights = _read(path)
            manifest = build_manifest(
                architecture=arch, class_names=class_names, imgsz=imgsz or 640, weights=weights
            )
        elif path.suffix == ".onnx":
            if not class_names:
                raise InvalidInput("an .onnx file needs --class-names (and --imgsz if not 640)")
            weights = _read(path)
            manifest = build_manifest(
                architecture=None,
                class_names=class_names,
                imgsz=imgsz or 640,
                weights=weights,
                format="onnx",
            )
        else:
            raise InvalidInput(
                f"{path.name}: push a converter output folder, a .safetensors or an .onnx file"
            )
        engine.check_loadable(manifest, weights)  # shapes must fit the architecture
    except ModelLoadError as exc:
        raise InvalidInput(f"{path.name} cannot be served: {exc}") from None
    except ValueError as exc:  # pydantic: bad arch, imgsz, class names
        raise InvalidInput(f"{path.name}: {exc}") from None
    return manifest, weights


def upload(
    base_uri: str,
    settings: StoreSettings,
    tenant: str,
    model: str,
    version: int,
    manifest: ModelManifest,
    weights: bytes,
) -> str:
    """Write weights, then the manifest (last: a version is complete once it exists)."""
    uri = f"{base_uri.rstrip('/')}/{tenant}/{model}/{version}"
    store = open_store(uri, settings)
    try:
        store.write(manifest.weights_file, weights)
        store.write(MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
    except (ModelLoadError, OSError) as exc:
        raise InvalidInput(f"upload to {uri} failed: {exc}") from None
    return uri


def push_version(
    reg: Registry,
    tenant: str,
    model: str,
    path: Path,
    *,
    arch: str | None = None,
    class_names: list[str] | None = None,
    imgsz: int | None = None,
    trusted_pt: bool = False,
    activate: bool = False,
) -> tuple[ModelVersion, ModelManifest]:
    """Check, upload to the platform's model store, and record the next version."""
    reg.tenant(tenant)
    validate_model_name(model)
    manifest, weights = prepare(
        path, arch=arch, class_names=class_names, imgsz=imgsz, trusted_pt=trusted_pt
    )
    platform = reg.platform()
    # Reserved before the upload: two pushes at once get two numbers, and neither can
    # overwrite the other's files (or a recorded version's).
    number = reg.reserve_version(tenant, model)
    taken = uploads.highest(reg, tenant, model)  # the tenant's own uploads' numbers
    while number <= taken:  # stays reserved: never an operator's version
        number = reg.reserve_version(tenant, model)
    try:
        uri = upload(
            platform.model_store_uri, platform.store, tenant, model, number, manifest, weights
        )
    except BaseException:
        reg.release_version(tenant, model, number)
        raise
    version = ModelVersion(
        version=number,
        uri=uri,
        architecture=manifest.architecture or manifest.format,
        sha256=manifest.sha256,
        created_at=utc_iso(),
    )
    reg.add_model_version(tenant, model, version, activate=activate)
    return version, manifest
