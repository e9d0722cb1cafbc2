"""A tenant's own detection defaults, held inside the operator's policy."""

from __future__ import annotations

import pytest

from serve_app.config import DetectionPolicy
from serve_app.errors import BadParameter
from serve_app.inference.defaults import effective_policy, parse_defaults, policy_view
from serve_app.inference.policy import clamp
from serve_app.wire import TenantDefaults

POLICY = DetectionPolicy(conf=0.25, min_conf=0.1, iou=0.7, max_det=50)


def test_saved_defaults_become_the_requests_defaults():
    defaults = parse_defaults(b'{"conf": 0.6, "iou": 0.5}', POLICY)
    params = clamp({}, effective_policy(POLICY, defaults))
    assert (params.conf, params.iou, params.max_det) == (0.6, 0.5, 50)
    # A request that names a value still wins, and is still clamped by the operator.
    assert clamp({"conf": "0.3"}, effective_policy(POLICY, defaults)).conf == 0.3
    assert clamp({"conf": "0.01"}, effective_policy(POLICY, defaults)).conf == 0.1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"conf": 0.05}', "lowest confidence is 0.1"),
        (b'{"max_det": 500}', "at most 50 detections"),
        (b'{"conf": 1.5}', "conf:"),
        (b'{"iou": 0.99}', "iou:"),
        (b'{"conf": "high"}', "conf:"),
        (b'{"confidence": 0.4}', "confidence: Extra inputs"),
        (b'{"allowed_classes": ["x"]}', "allowed_classes"),
        (b"[0.4]", "JSON object"),
        (b"{not json", "JSON object"),
        (b'{"conf": 0.4' + b" " * 5000 + b"}", "over 4096 bytes"),
    ],
)
def test_out_of_bounds_or_malformed_defaults_are_400s_that_name_the_fix(body, needle):
    with pytest.raises(BadParameter) as caught:
        parse_defaults(body, POLICY)
    assert needle in str(caught.value)


def test_a_tightened_policy_still_bounds_old_defaults():
    saved = TenantDefaults(conf=0.12, max_det=40)
    tighter = POLICY.model_copy(update={"min_conf": 0.2, "conf": 0.3, "max_det": 10})
    current = effective_policy(tighter, saved)
    assert (current.conf, current.max_det) == (0.2, 10)


def test_the_view_shows_defaults_in_force_and_bounds():
    view = policy_view(POLICY, TenantDefaults(iou=0.45))
    assert view["defaults"] == {"conf": 0.25, "iou": 0.45, "max_det": 50}
    assert view["saved"] == {"conf": None, "iou": 0.45, "max_det": None}
    assert view["bounds"]["conf"] == [0.1, 1.0] and view["bounds"]["max_det"] == [1, 50]
    assert policy_view(POLICY, None)["defaults"]["conf"] == 0.25
