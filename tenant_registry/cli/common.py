"""What every ``tenantctl`` command module shares: how a command is declared, printed
output, and the small argument helpers.

A command is a ``Command`` row: its words (``("tenant", "create")``), its handler, its
help and its arguments (``arg(...)``: what ``add_argument`` takes). ``tenant_registry.cli``
builds the whole parser from the rows of every noun module.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from serve_app.wire import utc_iso
from tenant_registry.errors import InvalidInput
from tenant_registry.records import ModelVersion, Tenant
from tenant_registry.store import Registry

Handler = Callable[[Registry, argparse.Namespace], int]
UNSET: Any = object()  # default of flags whose absence means "leave it as it is"


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """One ``tenantctl`` command line.

    ``read`` commands take ``--json`` and are not audited (unless ``audited`` says so).
    """

    words: tuple[str, ...]
    handler: Handler
    help: str
    args: Sequence[Arg] = field(default_factory=tuple)
    read: bool = False
    audited: bool | None = None


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, indent=2)


def emit(args: argparse.Namespace, data: Any, text: str) -> int:
    """Print ``data`` as JSON with ``--json``, else the human-readable ``text``."""
    print(to_json(data) if args.json else text)
    return 0


def tenant_dict(t: Tenant) -> dict[str, Any]:
    data = asdict(t)
    data["keys"] = [{k: v for k, v in key.items() if k != "sha256"} for key in data["keys"]]
    return data


def optional_number(kind: type[float] | type[int]) -> Callable[[str], float | int | None]:
    """argparse type: a number, or 'none' for unlimited/unset."""

    def parse(raw: str) -> float | int | None:
        if raw.lower() in ("none", "unlimited"):
            return None
        try:
            return kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {raw!r}") from None

    return parse


def changes(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The flags among ``names`` that were given (their default is ``UNSET``)."""
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not UNSET}
    if not given:
        flags = ", ".join("--" + n.replace("_", "-") for n in names)
        raise InvalidInput(f"nothing to change: pass at least one of {flags}")
    return given


def unset_flags(names: Sequence[str], kinds: dict[str, Any] | None = None) -> list[Arg]:
    """``--name`` flags defaulting to ``UNSET``, one per field."""
    kinds = kinds or {}
    return [arg(f"--{n.replace('_', '-')}", default=UNSET, **kinds.get(n, {})) for n in names]


def version_from_uri(uri: str, version: int) -> ModelVersion:
    """Read and verify the version at ``uri`` so the registry records what is really there."""
    from serve_app.errors import ModelLoadError
    from serve_app.models.store import fetch_version

    try:
        fetched = fetch_version(uri)
    except (ModelLoadError, ValueError) as exc:
        raise InvalidInput(f"model at {uri} is not usable: {exc}") from None
    return ModelVersion(
        version=version,
        uri=uri,
        architecture=fetched.manifest.architecture or fetched.manifest.format,
        sha256=fetched.manifest.sha256,
        created_at=utc_iso(),
    )


TENANT = arg("tenant")
CLUSTER_HELP = "RAY_ADDRESS ('auto' for the local cluster)"
