"""The import rule: core and ros never load a framework; backends never load ROS.

The first test imports every module in a fresh interpreter, so what this test process has
already imported cannot hide a violation. The others read the sources, so a lazy import inside a
function (which importing alone would not run) is caught too.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "ml_bridge"
ENV_SH = REPO / "build" / "env.sh"

PROBE = r"""
import importlib, json, pkgutil, sys
out = {"imported": [], "skipped": []}
try:
    import ml_bridge.msg  # generated messages: only with the workspace sourced
    have_msgs = True
except ImportError:
    have_msgs = False
import ml_bridge.core, ml_bridge.ros
for package in (ml_bridge.core, ml_bridge.ros):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if package is ml_bridge.ros and not have_msgs:
            out["skipped"].append(info.name)
            continue
        importlib.import_module(info.name)
        out["imported"].append(info.name)
importlib.import_module("ml_bridge.doctor")
out["have_msgs"] = have_msgs
out["frameworks"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras"))
print(json.dumps(out))
"""


def _probe_env() -> Dict[str, str]:
    """The environment of build/env.sh when the workspace is built, else this one plus src/."""
    if ENV_SH.is_file():
        dump = subprocess.run(["bash", "-c", f"source '{ENV_SH}' >/dev/null && env -0"],
                              check=True, capture_output=True, timeout=30).stdout
        return dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def test_core_and_ros_import_no_framework() -> None:
    env = _probe_env()
    python = shutil.which("python3", path=env.get("PATH")) if ENV_SH.is_file() else None
    run = subprocess.run([python or sys.executable, "-c", PROBE], env=env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "ml_bridge.core.server" in out["imported"] and "ml_bridge.core.execution" in out["imported"]
    assert out["frameworks"] == [], f"importing core/ros loaded {out['frameworks']}"
    if out["skipped"]:
        pytest.skip(f"ml_bridge.msg not importable, ros modules not imported: {out['skipped']}")


IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))", re.MULTILINE)


def imported_modules(path: Path) -> List[str]:
    """Top-level names of every import statement in a file, also those inside functions."""
    names = []
    for match in IMPORT.finditer(path.read_text()):
        if match.group(1):
            names.append(match.group(1))
        else:
            names += [part.split()[0] for part in match.group(2).split(",") if part.strip()]
    return names


def violations(layer: str, forbidden: Tuple[str, ...]) -> List[str]:
    found = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


ROS = ("rospy", "actionlib", "cv_bridge", "rosbag", "rosgraph", "genpy", "std_msgs", "sensor_msgs",
       "ml_bridge.ros", "ml_bridge.msg", "ml_bridge.srv")
FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras")


def test_the_import_scanner_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os, rospy as r\ndef f():\n    from cv_bridge import CvBridge\n")
    assert imported_modules(sample) == ["os", "rospy", "cv_bridge"]


def test_backends_never_import_ros() -> None:
    assert violations("backends", ROS) == []


def test_core_imports_neither_ros_nor_a_framework() -> None:
    assert violations("core", ROS + FRAMEWORKS + ("ml_bridge.backends",)) == []


def test_ros_never_imports_a_framework() -> None:
    assert violations("ros", FRAMEWORKS) == []
