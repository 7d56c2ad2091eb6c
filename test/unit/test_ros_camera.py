"""rosrun ml_bridge camera: its frame sources and arguments, without a master."""
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml_bridge.ros.camera import SourceError, frames, parse_args


def _write_images(folder: Path) -> "list[np.ndarray]":
    rgb = []
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):  # name order: a, b, c
        image = np.zeros((12, 16, 3), np.uint8)
        image[:, :, 0] = 40 * (i + 1)        # red channel tells them apart
        image[:, :, 2] = 200
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rgb.append(image)
    (folder / "notes.txt").write_text("not an image")
    return [rgb[1], rgb[0], rgb[2]]


def test_a_folder_gives_its_images_in_name_order_as_rgb(tmp_path: Path) -> None:
    expected = _write_images(tmp_path)
    got = list(frames(str(tmp_path)))
    assert len(got) == 3
    for frame, want in zip(got, expected):
        assert frame.shape == (12, 16, 3) and frame.dtype == np.uint8
        np.testing.assert_allclose(frame.astype(int), want.astype(int), atol=3)  # jpeg


def test_loop_starts_the_folder_again(tmp_path: Path) -> None:
    _write_images(tmp_path)
    got = list(itertools.islice(frames(str(tmp_path), loop=True), 7))
    assert [int(f[0, 0, 0]) // 40 for f in got] == [2, 1, 3, 2, 1, 3, 2]


def test_a_video_file_gives_its_frames(tmp_path: Path) -> None:
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    got = list(frames(path))
    assert len(got) == 5 and got[0].shape == (24, 32, 3)
    assert [int(f.mean()) // 10 for f in got] == [0, 4, 8, 12, 16]


def test_synthetic_scenes_move_at_the_size_asked_for() -> None:
    first, second = itertools.islice(frames("synthetic", width=80, height=60), 2)
    assert first.shape == (60, 80, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither a folder, a video file nor 'synthetic'"):
        next(frames(str(tmp_path / "missing")))
    with pytest.raises(SourceError, match="holds no images"):
        next(frames(str(tmp_path)))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        next(frames(str(tmp_path / "junk.mp4")))


def test_arguments_are_checked() -> None:
    args = parse_args(["--source", "synthetic", "--rate", "5", "--loop", "--frame-id", "cam"])
    assert args.rate == 5 and args.loop and args.frame_id == "cam"
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--rate", "0"])
