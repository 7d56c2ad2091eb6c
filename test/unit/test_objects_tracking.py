"""objects with ~track (pipelines/objects_tracking.py): a confirmed track is classified once,
then every ~reclassify_every frames, keeps its label; ids carried by the detections are used
as they are; track ids read from a Detection2DArray (ros/detections.py)."""
from typing import Any, List, Optional, Sequence, Tuple

import pytest
from detection_msgs import definition, detection2d_array, detection_class, serialize
from test_pipeline_objects import STAMP, Model, box_of, colour_model, frame_at, scene

from ml_bridge.core.errors import InputError
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Result
from ml_bridge.pipelines.objects import Detections, ObjectsPipeline
from ml_bridge.ros.detections import DETECTION2D_ARRAY, decode

BASE_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 100_000_000
WANTED = frozenset({"objects", "tracks", "counts", "overlay"})


def pipeline(**params: Any) -> ObjectsPipeline:
    return ObjectsPipeline(colour_model(), dict({"track": True, "track_min_hits": 1}, **params))


def run(objects: ObjectsPipeline, model: Model, frames: Sequence[List[Tuple[str, int]]],
        ids: Optional[Sequence[List[int]]] = None) -> List[Result]:
    """Per frame, red/green/blue 10 x 10 squares at (x, 20): frame and detections in, result out."""
    state = objects.new_state()
    results = []
    for i, squares in enumerate(frames):
        rects = [(colour, (x, 20, x + 10, 30)) for colour, x in squares]
        stamp = BASE_NS + i * STEP_NS
        objects.accept(frame_at(stamp, scene(rects)), state)
        detections = Detections(stamp, [box_of(*r) for _, r in rects], None, None,
                                None if ids is None else ids[i])
        assert objects.accept_detections(detections, state)
        request = objects.request(state)
        assert request is not None
        # No tensors when every box kept its track's label: the engine calls no model.
        prediction = model(request.inputs) if request.inputs else Prediction([], STAMP, 0.0)
        results.append(objects.postprocess(request, prediction, WANTED))
    return results


def crops(model: Model) -> int:
    return sum(shape[0] for shape in model.calls)


def test_a_confirmed_track_is_classified_once_and_keeps_its_label() -> None:
    model = Model()
    frames = [[("red", 10 + i), ("blue", 50 - i)] for i in range(6)]
    results = run(pipeline(), model, frames)
    assert crops(model) == 2                       # one crop per object, not per frame
    for result in results:
        assert [o.label for o in result.outputs["objects"]] == ["red", "blue"]
        assert [row["label"] for row in result.rows] == ["red", "blue"]
    last = results[-1]
    ids = [row["track_id"] for row in last.rows]
    assert 0 not in ids and len(set(ids)) == 2
    assert all(r.rows[0]["track_id"] == ids[0] for r in results)
    tracks = last.outputs["tracks"]
    assert [(t.id, t.label, t.class_id) for t in tracks.tracks] == [(ids[0], "red", 0),
                                                                    (ids[1], "blue", 2)]
    assert tracks.labels == ["red", "blue"]
    counts = last.outputs["counts"]
    assert (counts.labels, counts.in_frame, counts.total) == (["red", "blue"], [1, 1], [1, 1])
    assert last.outputs["overlay"].shape == (60, 80, 3)


def test_reclassify_every_n_frames() -> None:
    model = Model()
    run(pipeline(reclassify_every=2), model, [[("green", 10 + i)] for i in range(7)])
    assert crops(model) == 4                       # frames 0, 2, 4, 6


def test_tentative_boxes_are_classified_on_every_frame() -> None:
    model = Model()
    results = run(pipeline(track_min_hits=3), model, [[("red", 10 + i)] for i in range(5)])
    assert crops(model) == 3                       # frames 0, 1 tentative, 2 confirms it
    assert ["track_id" in r.rows[0] for r in results] == [False, False, True, True, True]


def test_ids_carried_by_the_detections_are_the_tracks() -> None:
    model = Model()
    # The boxes jump across the frame: no IoU, yet the carried ids keep their labels.
    frames = [[("red", 5 if i % 2 else 60), ("blue", 60 if i % 2 else 5)] for i in range(4)]
    results = run(pipeline(), model, frames, ids=[[41, 42]] * 4)
    assert crops(model) == 2
    assert [[row["track_id"] for row in r.rows] for r in results] == [[41, 42]] * 4
    assert [o.label for o in results[-1].outputs["objects"]] == ["red", "blue"]


def test_without_track_nothing_changes() -> None:
    model = Model()
    objects = ObjectsPipeline(colour_model(), {})
    assert list(objects.outputs) == ["objects", "overlay"]
    results = run(objects, model, [[("red", 10 + i)] for i in range(3)])
    assert crops(model) == 3
    assert all("track_id" not in r.rows[0] and "tracks" not in r.outputs for r in results)


def test_tracking_adds_the_tracks_and_counts_outputs_and_checks_its_parameters() -> None:
    assert list(pipeline().outputs) == ["objects", "overlay", "tracks", "counts"]
    with pytest.raises(InputError, match="~reclassify_every"):
        pipeline(reclassify_every=-1)
    with pytest.raises(InputError, match=r"~count_lines\[0\]"):
        pipeline(count_lines=[{"name": "x"}])


def test_track_ids_are_read_from_each_detections_header_seq() -> None:
    cls = detection_class(DETECTION2D_ARRAY)
    msg = detection2d_array(cls, 1, 2, "cam", [(10, 10, 4, 4), (30, 30, 4, 4), (50, 50, 4, 4)])
    msg.header.seq = 77
    text, md5 = definition(DETECTION2D_ARRAY)

    def seqs(*values: int) -> Optional[List[int]]:
        for det, seq in zip(msg.detections, values):
            det.header = type(msg.header)(seq=seq, stamp=msg.header.stamp, frame_id="cam")
        return decode(DETECTION2D_ARRAY, text, serialize(msg), md5).track_ids

    assert seqs(5, 0, 9) == [5, 0, 9]
    assert seqs(77, 77, 77) is None     # a detector that copies the array's header
    assert seqs(0, 0, 0) is None        # or leaves them empty


def test_tracking_ids_of_other_layouts_are_read_where_numeric() -> None:
    cls = detection_class(DETECTION2D_ARRAY)   # the layout with is_tracking and tracking_id
    msg = detection2d_array(cls, 1, 2, "cam", [(10, 10, 4, 4), (30, 30, 4, 4)])
    text, md5 = definition(DETECTION2D_ARRAY)
    for det, given in zip(msg.detections, ("12", "")):
        det.is_tracking, det.tracking_id = bool(given), given
    assert decode(DETECTION2D_ARRAY, text, serialize(msg), md5).track_ids == [12, 0]
    msg.detections[1].is_tracking, msg.detections[1].tracking_id = True, "car-3"
    assert decode(DETECTION2D_ARRAY, text, serialize(msg), md5).track_ids is None
