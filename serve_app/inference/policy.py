"""Per-request detection parameters, parsed strictly and clamped to the tenant policy.

The router parses the query string and clamps what it can (conf, iou, max_det,
the image-size cap); the detector, which knows the model's class names and
default image size, finishes the job with ``resolve_imgsz`` and ``resolve_classes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.config import DetectionPolicy
from serve_app.constants import (
    IMGSZ_STRIDE_PX,
    MAX_CLASS_TOKENS,
    MAX_IMGSZ_PX,
    MAX_IOU,
    MAX_NUMBER_CHARS,
    MIN_IMGSZ_PX,
    MIN_IOU,
)
from serve_app.errors import BadParameter
from serve_app.numerals import is_decimal, is_integer

DETECTION_PARAMS = frozenset({"conf", "iou", "max_det", "classes", "imgsz"})
SELECTION_PARAMS = frozenset({"model", "version"})
OUTPUT_PARAMS = frozenset({"annotate"})
QUERY_PARAMS = DETECTION_PARAMS | SELECTION_PARAMS | OUTPUT_PARAMS  # POST /v1/detect's


@dataclass(frozen=True)
class InferenceParams:
    """What the detector needs to run one request; crosses the handle by value."""

    conf: float
    iou: float
    max_det: int
    imgsz: int | None
    max_imgsz: int
    classes: tuple[str, ...] | None
    allowed_classes: tuple[str, ...] | None
    # A rollout pair's call: never the burst session (``Runner.predict``'s ``alone``), so
    # the incumbent and the candidate run with the same threads and their times compare.
    steady: bool = False


def _number(
    name: str, raw: str, kind: type[float] | type[int], low: float, high: float | None = None
) -> float:
    """A number in its domain ``[low, high]``; outside it (or not a number) is a 400.

    Inside the domain but outside the tenant's policy is clamped by the caller.
    """
    wanted = "an integer" if kind is int else "a number"
    if len(raw) > MAX_NUMBER_CHARS:
        raise BadParameter(f"query parameter {name!r} must be {wanted} of at most 32 characters")
    if not (is_integer(raw) if kind is int else is_decimal(raw)):
        example = "e.g. 100" if kind is int else "e.g. 0.25"
        raise BadParameter(
            f"query parameter {name!r} must be {wanted} in ASCII digits ({example}), "
            f"got {raw[:32]!r}"
        )
    value = kind(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise BadParameter(f"query parameter {name!r} must be a finite number")
    if value < low or (high is not None and value > high):
        domain = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise BadParameter(f"query parameter {name!r} must be {domain}, got {raw[:32]!r}")
    return value


def check_known(query: Mapping[str, str]) -> None:
    """Refuse unknown query parameters, so a typo is an error and not a silent default."""
    unknown = sorted(set(query) - QUERY_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(QUERY_PARAMS))
        raise BadParameter(f"unknown query parameter {unknown[0][:32]!r}; allowed: {allowed}")


def clamp(query: Mapping[str, str], policy: DetectionPolicy) -> InferenceParams:
    """Parse detection parameters from ``query`` and clamp them into ``policy``.

    Numbers inside their domain but outside the tenant's policy are clamped (a paid
    API should answer, not argue: ``imgsz=4000`` runs at the tenant's cap). Values
    outside the domain (``conf=7``, ``max_det=0``, ``imgsz=-1``, 40-digit numbers, NaN)
    or not numbers at all are a 400.
    """
    conf = policy.conf
    if "conf" in query:
        conf = max(_number("conf", query["conf"], float, 0.0, 1.0), policy.min_conf)
    iou = policy.iou
    if "iou" in query:
        iou = min(max(_number("iou", query["iou"], float, 0.0, 1.0), MIN_IOU), MAX_IOU)
    max_det = policy.max_det
    if "max_det" in query:
        max_det = int(min(_number("max_det", query["max_det"], int, 1), policy.max_det))
    imgsz: int | None = None
    if "imgsz" in query:
        imgsz = int(_number("imgsz", query["imgsz"], int, 1))
    classes: tuple[str, ...] | None = None
    if "classes" in query:
        tokens = [t.strip() for t in query["classes"].split(",") if t.strip()]
        if not tokens or len(tokens) > MAX_CLASS_TOKENS:
            raise BadParameter(
                "query parameter 'classes' must list class names or ids, e.g. classes=circle,2"
            )
        classes = tuple(tokens)
    allowed = tuple(policy.allowed_classes) if policy.allowed_classes is not None else None
    return InferenceParams(
        conf=conf,
        iou=iou,
        max_det=max_det,
        imgsz=imgsz,
        max_imgsz=policy.max_imgsz,
        classes=classes,
        allowed_classes=allowed,
    )


def resolve_imgsz(params: InferenceParams, model_default: int) -> int:
    """The inference size: requested or the model's default, capped, on the stride grid."""
    wanted = params.imgsz if params.imgsz is not None else model_default
    capped = min(max(wanted, MIN_IMGSZ_PX), params.max_imgsz, MAX_IMGSZ_PX)
    return max(MIN_IMGSZ_PX, capped // IMGSZ_STRIDE_PX * IMGSZ_STRIDE_PX)


def resolve_classes(params: InferenceParams, class_names: list[str]) -> list[int] | None:
    """Class ids to keep, or None for all; requests outside the policy are a 400."""
    index = {name: i for i, name in enumerate(class_names)}
    allowed: set[int] | None = None
    if params.allowed_classes is not None:
        allowed = {index[n] for n in params.allowed_classes if n in index}
    if params.classes is None:
        return sorted(allowed) if allowed is not None else None
    wanted: set[int] = set()
    for token in params.classes:
        if is_integer(token) and len(token) <= MAX_NUMBER_CHARS and int(token) < len(class_names):
            wanted.add(int(token))
        elif token in index:
            wanted.add(index[token])
        else:
            raise BadParameter(
                f"unknown class {token[:64]!r}; this model's classes are: {', '.join(class_names)}"
            )
    if allowed is not None and not wanted <= allowed:
        names = ", ".join(class_names[i] for i in sorted(allowed)) or "none"
        raise BadParameter(f"classes outside your policy were requested; allowed: {names}")
    return sorted(wanted)
