"""How far two answers for the same image agree, box by box: the rollout gate's measure.

Per class name present in either answer, boxes are matched one to one, best overlap
first, where their IoU is at least ``ROLLOUT_MATCH_IOU``; the class's F1 is
``2·matched / (boxes in one + boxes in the other)``. An image's agreement is the mean
over those classes, and 1.0 when neither answer has a box. Class *names* are compared,
not ids: a candidate with two names swapped disagrees wherever those classes appear,
as its customers would see.

Pure: unit-tested with hand-made boxes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from serve_app.constants import ROLLOUT_MATCH_IOU

BBox = Sequence[float]  # x1, y1, x2, y2 in pixels
Box = tuple[str, BBox]  # class name, bbox


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 when either is empty)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched(ours: Sequence[BBox], theirs: Sequence[BBox], min_iou: float) -> int:
    """How many boxes pair up one to one, greedily by descending IoU, at ``min_iou``."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(ours) for j, b in enumerate(theirs)),
        reverse=True,
    )
    used_ours: set[int] = set()
    used_theirs: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i not in used_ours and j not in used_theirs:
            used_ours.add(i)
            used_theirs.add(j)
    return len(used_ours)


def box_agreement(
    incumbent: Sequence[Box], candidate: Sequence[Box], min_iou: float = ROLLOUT_MATCH_IOU
) -> float:
    """Mean per-class F1 of ``candidate`` against ``incumbent`` (1.0 if both are empty)."""
    by_class: dict[str, tuple[list[BBox], list[BBox]]] = defaultdict(lambda: ([], []))
    for name, bbox in incumbent:
        by_class[name][0].append(bbox)
    for name, bbox in candidate:
        by_class[name][1].append(bbox)
    if not by_class:
        return 1.0
    scores = [
        2 * matched(ours, theirs, min_iou) / (len(ours) + len(theirs))
        for ours, theirs in by_class.values()
    ]
    return sum(scores) / len(scores)
