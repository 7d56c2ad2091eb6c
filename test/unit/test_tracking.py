"""The tracker on scripted box sequences (pipelines/tracking.py): no ROS, no framework."""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.tracking import (
    CONFIRMED,
    ENDED,
    TrackedFrame,
    Tracker,
    TrackSettings,
    iou_matrix,
    match,
)

BASE_NS = 1_700_000_000 * 1_000_000_000   # a real epoch stamp: nanoseconds stay exact
STEP_NS = 100_000_000                      # 10 frames per second of stamps

Det = Tuple[float, float, int]   # box centre x, y and class id; boxes are 20 x 20


def frame(tracker: Tracker, index: int, dets: Sequence[Det],
          stamp_ns: Optional[int] = None) -> TrackedFrame:
    """Feeds detections at frame ``index`` (or at ``stamp_ns``)."""
    boxes = np.array([[x - 10, y - 10, x + 10, y + 10] for x, y, _ in dets], np.float32)
    classes = [c for _, _, c in dets]
    stamp = BASE_NS + index * STEP_NS if stamp_ns is None else stamp_ns
    return tracker.update(stamp, boxes, classes, [0.9] * len(dets), [f"c{c}" for c in classes])


def test_a_track_is_confirmed_after_min_hits_and_only_then_has_an_id() -> None:
    tracker = Tracker(TrackSettings(min_hits=3))
    ids = [frame(tracker, i, [(50 + 2 * i, 50, 0)]).track_ids[0] for i in range(4)]
    assert ids[0] == ids[1] == 0
    assert ids[2] > 0 and ids[3] == ids[2]
    out = frame(tracker, 4, [(60, 50, 0)])
    assert [(t.id, t.state, t.hits) for t in out.tracks] == [(ids[2], CONFIRMED, 5)]


def test_an_id_survives_a_one_frame_miss() -> None:
    tracker = Tracker(TrackSettings(min_hits=2, max_age=0.5))
    first = [frame(tracker, i, [(40 + 3 * i, 60, 1)]).track_ids[0] for i in range(3)][-1]
    missed = frame(tracker, 3, [])
    assert missed.tracks == [] and missed.ended == []
    after = frame(tracker, 4, [(52, 60, 1)])
    assert after.track_ids == [first] and after.ended == []


def test_ended_once_with_the_right_duration_and_a_new_id_after_max_age() -> None:
    tracker = Tracker(TrackSettings(min_hits=1, max_age=0.25))
    for i in range(5):   # matched at frames 0..4: 0.4 s of stamps
        old = frame(tracker, i, [(30, 30, 0)]).track_ids[0]
    assert frame(tracker, 6, []).ended == []            # 0.2 s unmatched: alive
    ended = frame(tracker, 8, []).ended                 # 0.4 s unmatched: ended
    assert [(t.id, t.state) for t in ended] == [(old, ENDED)]
    assert ended[0].duration == pytest.approx(0.4)
    assert ended[0].first_seen_ns == BASE_NS and ended[0].last_seen_ns == BASE_NS + 4 * STEP_NS
    again = frame(tracker, 9, [(30, 30, 0)])            # the same place: a new object
    assert again.ended == [] and again.track_ids[0] not in (0, old)
    assert all(frame(tracker, 10 + i, []).ended == [] for i in range(2))   # 0.1, 0.2 s
    assert [t.id for t in frame(tracker, 20, []).ended] == [again.track_ids[0]]
    assert frame(tracker, 21, []).ended == [] and tracker.live == []     # once only


def test_two_crossing_objects_keep_their_ids() -> None:
    tracker = Tracker(TrackSettings(min_hits=1))
    ids: List[List[int]] = []
    for i in range(15):   # A goes right, B goes left, 8 px lower: their boxes overlap midway
        out = frame(tracker, i, [(20 + 4 * i, 50, 0), (76 - 4 * i, 58, 0)])
        ids.append(out.track_ids)
    assert all(row == ids[0] for row in ids), ids
    assert len(set(ids[0])) == 2


def test_boxes_of_another_class_are_never_matched() -> None:
    tracker = Tracker(TrackSettings(min_hits=1))
    first = frame(tracker, 0, [(50, 50, 0)]).track_ids
    second = frame(tracker, 1, [(50, 50, 1)])
    assert second.track_ids[0] not in (0, first[0])


def test_a_tentative_track_that_is_lost_is_dropped_silently() -> None:
    tracker = Tracker(TrackSettings(min_hits=3, max_age=0.1))
    frame(tracker, 0, [(50, 50, 0)])
    frame(tracker, 1, [(50, 50, 0)])
    out = frame(tracker, 5, [])
    assert out.ended == [] and out.tracks == [] and tracker.live == []


def test_a_stamp_going_backwards_restarts_tracking() -> None:
    tracker = Tracker(TrackSettings(min_hits=2, max_age=5.0))
    for i in range(10):
        old = frame(tracker, i, [(40, 40, 0)]).track_ids[0]
    looped = frame(tracker, 0, [(40, 40, 0)])            # the bag starts again
    assert looped.restarted and tracker.restarts == 1
    assert [(t.id, t.state) for t in looped.ended] == [(old, ENDED)]
    assert looped.ended[0].duration == pytest.approx(0.9)
    assert looped.track_ids == [0]                       # a fresh track, tentative again
    again = frame(tracker, 1, [(40, 40, 0)])
    assert not again.restarted and again.ended == []
    assert again.track_ids[0] not in (0, old)            # ids are never reused
    assert again.tracks[0].first_seen_ns == BASE_NS


def test_the_same_stamp_twice_is_not_a_restart() -> None:
    tracker = Tracker(TrackSettings(min_hits=1))
    first = frame(tracker, 3, [(40, 40, 0)]).track_ids
    again = frame(tracker, 3, [(41, 40, 0)])
    assert not again.restarted and again.track_ids == first


def test_ids_are_unique_across_trackers() -> None:
    left, right = Tracker(TrackSettings(min_hits=1)), Tracker(TrackSettings(min_hits=1))
    a = frame(left, 0, [(10, 10, 0)]).track_ids[0]
    b = frame(right, 0, [(10, 10, 0)]).track_ids[0]
    assert a != b and 0 not in (a, b)


def test_the_assignment_is_optimal_not_greedy() -> None:
    # Greedy would take (0, 0) first (0.9) and leave track 1 without a match; the optimal
    # assignment pairs 0-1 and 1-0 (0.6 + 0.7).
    ious = np.array([[0.9, 0.6], [0.7, 0.0]])
    assert sorted(match(ious, 0.3)) == [(0, 1), (1, 0)]
    assert match(ious, 0.65) == [(0, 0)]     # pairs under the threshold weigh nothing


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(InputError, match="track_iou"):
        TrackSettings(iou=0.0)
    with pytest.raises(InputError, match="track_min_hits"):
        TrackSettings(min_hits=0)
    with pytest.raises(InputError, match="track_max_age"):
        TrackSettings(max_age=-1.0)
    with pytest.raises(InputError, match="one per box"):
        Tracker().update(BASE_NS, np.zeros((2, 4)), [0], [0.5], ["a"])


def test_given_ids_are_followed_without_matching_and_end_once() -> None:
    tracker = Tracker(TrackSettings(min_hits=3, max_age=0.15))
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [80, 0, 90, 10]], np.float32)
    first = tracker.update_given(BASE_NS, [7, 0, 9], boxes, [0, 0, 1], [0.5] * 3, ["a", "a", "b"])
    assert first.track_ids == [7, 0, 9] and [t.id for t in first.tracks] == [7, 9]
    assert first.tracks[0].state == CONFIRMED             # confirmed upstream
    moved = boxes[:1] + 40                                # far away: still id 7, no matching
    second = tracker.update_given(BASE_NS + STEP_NS, [7], moved, [0], [0.6], ["a"])
    assert [(t.id, t.hits, t.duration) for t in second.tracks] == [(7, 2, 0.1)]
    third = tracker.update_given(BASE_NS + 2 * STEP_NS, [], np.zeros((0, 4)), [], [], [])
    assert [(t.id, t.state) for t in third.ended] == [(9, ENDED)]
    fourth = tracker.update_given(BASE_NS + 3 * STEP_NS, [], np.zeros((0, 4)), [], [], [])
    assert [t.id for t in fourth.ended] == [7]
    looped = tracker.update_given(BASE_NS, [7], boxes[:1], [0], [0.5], ["a"])
    assert looped.restarted and looped.ended == []
    with pytest.raises(InputError, match="one per box"):
        tracker.update_given(BASE_NS, [1, 2], boxes[:1], [0], [0.5], ["a"])


def test_a_box_that_is_not_finite_is_never_tracked() -> None:
    tracker = Tracker(TrackSettings(min_hits=1))
    boxes = np.array([[np.nan, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    out = tracker.update(BASE_NS, boxes, [0, 0], [0.5, 0.5], ["a", "a"])
    assert out.track_ids[0] == 0 and out.track_ids[1] > 0 and len(tracker.live) == 1
    given = tracker.update_given(BASE_NS, [4, 5], boxes, [0, 0], [0.5] * 2, ["a"] * 2)
    assert [t.id for t in given.tracks] == [5]
