"""launch/detect_track.launch: the detect node tracks and counts with the given lines; the
objects node, given a classifier, takes the detector's detections and tracks."""
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from ml_bridge.pipelines.track_stage import Tracking

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "detect_track.launch"

pytestmark = pytest.mark.skipif(shutil.which("roslaunch") is None,
                                reason="ROS 1 command-line tools (roslaunch) not installed")


def test_the_chain_is_configured_as_the_contract_says(tmp_path: Path) -> None:
    run = subprocess.run(["roslaunch", "--dump-params", str(LAUNCH), "classifier:=digits_mlp",
                          "count_lines:=[{name: door, points: [[64, 0], [64, 128]]}]"],
                         capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                         env=dict(os.environ, ROS_HOME=str(tmp_path), ROS_LOG_DIR=str(tmp_path)))
    assert run.returncode == 0, run.stdout + run.stderr
    params: Dict[str, Any] = yaml.safe_load(run.stdout)
    detector = {k.split("/")[-1]: v for k, v in params.items() if k.startswith("/detector/ml_bridge/")}
    objects = {k.split("/")[-1]: v for k, v in params.items() if k.startswith("/classifier/ml_bridge/")}
    assert (detector["pipeline"], detector["model"], detector["track"]) == ("detect", "shapes_det", True)
    assert [line.name for line in Tracking(detector).lines] == ["door"]
    assert (objects["pipeline"], objects["model"], objects["track"]) == ("objects", "digits_mlp", True)
    assert objects["detections"] == "/detector/ml_bridge/detections"

