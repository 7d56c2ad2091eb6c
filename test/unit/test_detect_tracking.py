"""detect with ~track: track ids on boxes, ~tracks, ~counts, rule rows, the overlay, and ids
carried in the Detection2DArray to an objects node (no re-tracking); untracked use unchanged."""
import io
from typing import Any, Dict, List

import numpy as np
import rospy
from blob_detectors import blob_frame
from std_msgs.msg import Header
from test_pipeline_detect import FakeDetector

from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.detect import DetectPipeline
from ml_bridge.ros.detection_array import detection_array, full_definition, generated_classes
from ml_bridge.ros.detections import DETECTION2D_ARRAY, decode

BASE = 1_700_000_000
WANTED = frozenset({"detections", "predictions", "overlay", "tracks", "counts"})
DOOR = {"name": "door", "points": [[160, 0], [160, 240]]}


def header(i: int) -> Header:
    return Header(seq=i, stamp=rospy.Time(BASE, i * 100_000_000), frame_id="cam")


def frames(count: int) -> List[Frame]:
    """A red square moving right across x = 160, a blue one standing still."""
    return [Frame(blob_frame(240, 320, [("red", (100 + 10 * i, 40, 140 + 10 * i, 80)),
                                        ("blue", (200, 150, 260, 210))]),
                  BASE + i / 10, header(i)) for i in range(count)]


def run(params: Dict[str, Any], count: int = 10) -> List[Result]:
    model = FakeDetector()
    pipeline = make_pipeline("detect", model, params)
    stamp = ModelStamp.of(model, 2)
    state = pipeline.new_state()
    results = []
    for frame in frames(count):
        result = pipeline.run(frame, lambda inputs: Prediction(model.predict(inputs), stamp, 1.0),
                              state, WANTED)
        assert result is not None
        results.append(result)
    return results


def test_boxes_get_track_ids_once_confirmed_and_keep_them() -> None:
    results = run({"track": True, "track_min_hits": 2, "count_lines": [DOOR]})
    ids = [r.outputs["detections"].track_ids for r in results]
    assert ids[0] == [0, 0]                    # tentative: no id yet
    assert all(row == ids[1] for row in ids[1:]) and 0 not in ids[1] and len(set(ids[1])) == 2
    last = results[-1]
    tracks = last.outputs["tracks"]
    assert [(t.id, t.label) for t in tracks.tracks] == [(ids[1][0], "red"), (ids[1][1], "blue")]
    assert tracks.tracks[0].duration == 0.9   # first seen at frame 0 (tentative), last at 9
    counts = last.outputs["counts"]
    assert (counts.labels, counts.in_frame, counts.total) == (["red", "blue"], [1, 1], [1, 1])
    assert (counts.lines, counts.forward, counts.backward) == (["door"], [1], [0])
    assert [(row["label"], row["track_id"], row["count"]) for row in last.rows] == [
        ("red", ids[1][0], 1), ("blue", ids[1][1], 1)]


def test_the_overlay_draws_track_ids_and_count_lines() -> None:
    tracked = run({"track": True, "track_min_hits": 1, "count_lines": [DOOR]}, 3)[-1]
    untracked = run({}, 3)[-1]
    column = tracked.outputs["overlay"][:, 160]
    assert not np.array_equal(tracked.outputs["overlay"], untracked.outputs["overlay"])
    assert (column != untracked.outputs["overlay"][:, 160]).any(axis=-1).sum() > 100  # the line


def test_an_object_gone_longer_than_max_age_ends_once_with_a_row() -> None:
    model = FakeDetector()
    pipeline = make_pipeline("detect", model, {"track": True, "track_min_hits": 1,
                                               "track_max_age": 0.25})
    stamp = ModelStamp.of(model, 2)
    state = pipeline.new_state()
    empty = blob_frame(240, 320, [])
    ended: List[Any] = []
    for i in range(12):
        image = frames(1)[0].image if i < 5 else empty
        result = pipeline.run(Frame(image, 0.0, header(i)),
                              lambda x: Prediction(model.predict(x), stamp, 1.0), state, WANTED)
        assert result is not None
        ended += [row for row in result.rows if row.get("track_ended")]
    assert [(row["label"], round(row["track_duration"], 3)) for row in ended] == [
        ("red", 0.4), ("blue", 0.4)]


def test_without_track_nothing_changes() -> None:
    pipeline = make_pipeline("detect", FakeDetector(), {})
    assert isinstance(pipeline, DetectPipeline)
    assert list(pipeline.outputs) == ["detections", "predictions", "overlay"]
    result = run({}, 2)[-1]
    assert not hasattr(result.outputs["detections"], "track_ids")
    assert "tracks" not in result.outputs and all("track_id" not in r for r in result.rows)


def test_the_detections_carry_track_ids_to_an_objects_node() -> None:
    result = run({"track": True, "track_min_hits": 2}, 3)[-1]
    found = result.outputs["detections"]
    msg = detection_array(found, header(2), generated_classes())
    assert [d.results[0].id for d in msg.detections] == [0, 2]       # class ids, as before
    assert [d.header.seq for d in msg.detections] == found.track_ids
    buff = io.BytesIO()
    msg.serialize(buff)
    decoded = decode(DETECTION2D_ARRAY, full_definition(), buff.getvalue(),
                     generated_classes()[0]._md5sum)
    assert decoded.track_ids == found.track_ids


def test_a_restart_keeps_the_tracks() -> None:
    # The stream restarts a pipeline's state while nobody listens: tracks end by stamps only.
    model = FakeDetector()
    pipeline = make_pipeline("detect", model, {"track": True, "track_min_hits": 1})
    stamp = ModelStamp.of(model, 2)
    state = pipeline.new_state()
    seen, durations = [], []
    for i, frame in enumerate(frames(4)):
        if i == 2:
            state = pipeline.restart(state)
        result = pipeline.run(frame, lambda x: Prediction(model.predict(x), stamp, 1.0), state,
                              WANTED)
        assert result is not None
        seen.append(result.outputs["detections"].track_ids)
        durations.append(result.outputs["tracks"].tracks[0].duration)
    assert seen[3] == seen[0] and durations[3] == 0.3
