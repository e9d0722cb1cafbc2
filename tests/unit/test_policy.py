from __future__ import annotations

import pytest

from serve_app.config import DetectionPolicy
from serve_app.errors import BadParameter
from serve_app.inference.policy import (
    InferenceParams,
    check_known,
    clamp,
    resolve_classes,
    resolve_imgsz,
)

POLICY = DetectionPolicy(conf=0.3, min_conf=0.1, iou=0.6, max_det=50, max_imgsz=640)
NAMES = ["circle", "square", "triangle"]


def test_defaults_come_from_the_policy():
    p = clamp({}, POLICY)
    assert (p.conf, p.iou, p.max_det, p.imgsz, p.max_imgsz) == (0.3, 0.6, 50, None, 640)
    assert p.classes is None and p.allowed_classes is None


@pytest.mark.parametrize(
    ("query", "field", "expected"),
    [
        ({"conf": "0.5"}, "conf", 0.5),
        ({"conf": "0.0"}, "conf", 0.1),  # below the tenant's floor
        ({"conf": "1"}, "conf", 1.0),
        ({"iou": "0"}, "iou", 0.05),
        ({"iou": "1"}, "iou", 0.95),
        ({"max_det": "10"}, "max_det", 10),
        ({"max_det": "100000"}, "max_det", 50),  # capped by policy
        ({"max_det": "1"}, "max_det", 1),
        ({"imgsz": "99999"}, "imgsz", 99999),  # capped later by resolve_imgsz
        ({"imgsz": "320"}, "imgsz", 320),
    ],
)
def test_values_are_clamped_into_the_policy(query, field, expected):
    assert getattr(clamp(query, POLICY), field) == pytest.approx(expected)


@pytest.mark.parametrize(
    "query",
    [
        {"conf": "high"},
        {"conf": "nan"},
        {"iou": "inf"},
        {"max_det": "2.5"},
        {"imgsz": "big"},
        {"classes": ""},
        {"classes": ",,"},
        {"conf": "7"},
        {"conf": "-0.1"},
        {"iou": "1.5"},
        {"max_det": "0"},
        {"max_det": "-3"},
        {"imgsz": "-1"},
        {"imgsz": "9" * 40},
        {"conf": "0." + "1" * 40},
        {"conf": "1e309"},
    ],
)
def test_non_numbers_and_values_outside_the_domain_are_400(query):
    with pytest.raises(BadParameter) as err:
        clamp(query, POLICY)
    assert next(iter(query)) in err.value.message


def test_unknown_query_parameters_are_rejected():
    check_known({"conf": "0.3", "model": "x", "version": "1"})
    with pytest.raises(BadParameter) as err:
        check_known({"confidence": "0.3"})
    assert "confidence" in err.value.message and "allowed" in err.value.message


def _params(**kw) -> InferenceParams:
    base = dict(
        conf=0.25,
        iou=0.7,
        max_det=10,
        imgsz=None,
        max_imgsz=640,
        classes=None,
        allowed_classes=None,
    )
    base.update(kw)
    return InferenceParams(**base)


@pytest.mark.parametrize(
    ("imgsz", "cap", "default", "expected"),
    [
        (None, 640, 320, 320),
        (1000, 640, 320, 640),
        (330, 640, 320, 320),
        (1, 640, 320, 32),
        (None, 256, 320, 256),
        (None, 100, 320, 96),
    ],
)
def test_imgsz_is_capped_and_on_the_stride_grid(imgsz, cap, default, expected):
    assert resolve_imgsz(_params(imgsz=imgsz, max_imgsz=cap), default) == expected


def test_classes_by_name_or_id():
    assert resolve_classes(_params(), NAMES) is None
    assert resolve_classes(_params(classes=("triangle", "0")), NAMES) == [0, 2]


def test_unknown_class_names_the_models_classes():
    with pytest.raises(BadParameter) as err:
        resolve_classes(_params(classes=("hexagon",)), NAMES)
    assert "hexagon" in err.value.message and "circle, square, triangle" in err.value.message
    with pytest.raises(BadParameter):
        resolve_classes(_params(classes=("3",)), NAMES)


def test_policy_allowlist_limits_classes():
    allowed = _params(allowed_classes=("circle", "square"))
    assert resolve_classes(allowed, NAMES) == [0, 1]
    assert resolve_classes(
        _params(allowed_classes=("circle", "square"), classes=("square",)), NAMES
    ) == [1]
    with pytest.raises(BadParameter) as err:
        resolve_classes(_params(allowed_classes=("circle",), classes=("triangle",)), NAMES)
    assert "allowed: circle" in err.value.message
