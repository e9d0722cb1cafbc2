"""A tenant's own detection defaults (``PUT /v1/policy``), inside the operator's policy.

The operator's ``DetectionPolicy`` (from the registry) sets the bounds: the lowest
confidence a tenant may use, the most detections, the IoU range every request is held
to. Within them a tenant may choose its own default confidence, IoU and detection cap;
requests that name a value still override the default, and are still clamped. The
defaults are kept by the quota ledger (shared by every router replica) and applied on
the next request, with no restart.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from serve_app.config import DetectionPolicy
from serve_app.constants import MAX_IOU, MAX_POLICY_BODY_BYTES, MIN_IOU
from serve_app.errors import BadParameter
from serve_app.wire import TenantDefaults


def parse_defaults(body: bytes, policy: DetectionPolicy) -> TenantDefaults:
    """The body of ``PUT /v1/policy``, checked against the operator's bounds.

    Raises:
        BadParameter: Not a JSON object of known fields, or a value out of bounds; the
            message names the field and the allowed range.
    """
    if len(body) > MAX_POLICY_BODY_BYTES:
        raise BadParameter(f"policy body is over {MAX_POLICY_BODY_BYTES} bytes; send only fields")
    try:
        defaults = TenantDefaults.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadParameter(
            f"{field}: {first['msg']}; send a JSON object with any of conf (0-1), "
            f"iou ({MIN_IOU}-{MAX_IOU}) and max_det (1-{policy.max_det})"
        ) from None
    if defaults.conf is not None and defaults.conf < policy.min_conf:
        raise BadParameter(
            f"conf: your plan's lowest confidence is {policy.min_conf:g}; choose at least that"
        )
    if defaults.max_det is not None and defaults.max_det > policy.max_det:
        raise BadParameter(f"max_det: your plan allows at most {policy.max_det} detections")
    return defaults


def effective_policy(policy: DetectionPolicy, defaults: TenantDefaults | None) -> DetectionPolicy:
    """The operator's policy with the tenant's defaults in place, still inside its bounds
    (the operator may have tightened them since the tenant saved)."""
    if defaults is None:
        return policy
    updates: dict[str, Any] = {}
    if defaults.conf is not None:
        updates["conf"] = max(defaults.conf, policy.min_conf)
    if defaults.iou is not None:
        updates["iou"] = defaults.iou
    if defaults.max_det is not None:
        updates["max_det"] = min(defaults.max_det, policy.max_det)
    return policy.model_copy(update=updates)


def policy_view(policy: DetectionPolicy, defaults: TenantDefaults | None) -> dict[str, Any]:
    """Body of ``GET /v1/policy``: the defaults in force and the bounds around them."""
    current = effective_policy(policy, defaults)
    return {
        "defaults": {"conf": current.conf, "iou": current.iou, "max_det": current.max_det},
        "saved": (defaults or TenantDefaults()).model_dump(),
        "bounds": {
            "conf": [policy.min_conf, 1.0],
            "iou": [MIN_IOU, MAX_IOU],
            "max_det": [1, policy.max_det],
        },
        "allowed_classes": policy.allowed_classes,
    }
