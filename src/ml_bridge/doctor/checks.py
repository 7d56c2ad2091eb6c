"""The checks of the set-up around the backends: ROS, the interpreter, numpy, messages, master."""
import http.client
import os
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from typing import Any, Optional, Sequence

from ml_bridge.doctor.report import (
    FAIL,
    NUMPY_FIX,
    OK,
    VENV_FIX,
    WARN,
    Env,
    Result,
    _err,
    _numpy_abi_error,
)


def _rospy_manifest(env: Env) -> Optional[str]:
    roots = [p for p in env.environ.get("ROS_PACKAGE_PATH", "").split(os.pathsep) if p]
    roots += [os.path.join(p, "share") for p in env.environ.get("CMAKE_PREFIX_PATH", "").split(
        os.pathsep) if p]
    roots += ["/opt/ros/noetic/share", "/usr/share"]
    for root in roots:
        path = os.path.join(root, "rospy", "package.xml")
        if os.path.isfile(path):
            return path
    return None


def check_ros(env: Env) -> Result:
    """ROS 1 is installed (Noetic in /opt/ros/noetic or Debian's packages) and which one."""
    distro = env.environ.get("ROS_DISTRO", "")
    if env.environ.get("ROS_VERSION") == "2":
        return Result(FAIL, "ROS", f"a ROS 2 environment is sourced (ROS_DISTRO={distro}); ml_bridge "
                      "is ROS 1", "open a new shell without ROS 2's setup and `source build/env.sh`")
    manifest = _rospy_manifest(env)
    if manifest is None:
        return Result(FAIL, "ROS 1", "not found (no rospy in /opt/ros/noetic or in Debian's /usr/share)",
                      "`make setup` installs Debian's ROS 1 packages (or install ROS Noetic), then "
                      "`source build/env.sh`")
    version = ET.parse(manifest).findtext("version") or "?"
    where = ("ROS Noetic, /opt/ros/noetic" if manifest.startswith("/opt/ros/")
             else f"Debian's packages, {os.path.dirname(manifest)}")
    subject = f"ROS 1 (ros_comm {version})"
    if not distro:
        return Result(WARN, subject, f"found ({where}) but the ROS environment is not set "
                      "(ROS_DISTRO unset)", "`source build/env.sh`")
    if not version.startswith("1.15") and not version.startswith("1.16"):
        return Result(WARN, subject, f"distro {distro} ({where}); ml_bridge is made for Noetic "
                      "(ros_comm 1.15)", "use ROS Noetic or Debian's ROS 1 packages")
    return Result(OK, subject, f"distro {distro} ({where})")


def _interpreter_advice(env: Env) -> str:
    exe = env.executable
    cfg = os.path.join(env.prefix, "pyvenv.cfg")
    if ".pyenv" in exe or os.path.isdir(os.path.join(env.prefix, "conda-meta")) or "conda" in exe:
        return ("a pyenv/conda Python does not see /usr/lib/python3/dist-packages (Debian's ROS) "
                "or /opt/ros/noetic/lib/python3/dist-packages, where rospy lives")
    if env.prefix != env.base_prefix and os.path.isfile(cfg):
        with open(cfg) as f:
            settings = dict(line.split("=", 1) for line in f if "=" in line)
        settings = {k.strip(): v.strip() for k, v in settings.items()}
        if settings.get("include-system-site-packages", "false").lower() != "true":
            return "this venv was made without --system-site-packages, so it cannot see ROS's packages"
        home = settings.get("home", "")
        if home and home != "/usr/bin":
            return (f"this venv was made from the Python in {home}, not /usr/bin/python3, which "
                    "ROS's packages are installed for")
    for where in ("/usr/lib/python3/dist-packages", "/opt/ros/noetic/lib/python3/dist-packages"):
        if os.path.isdir(os.path.join(where, "rospy")):
            return f"rospy is in {where}, which is not on this Python's sys.path"
    return ("rospy is not installed for this Python (Debian: apt install python3-rospy; Noetic: "
            "ros-noetic-rospy and source /opt/ros/noetic/setup.bash)")


def check_python(env: Env) -> Result:
    """The interpreter: version, which one, and whether it can import rospy."""
    ver = ".".join(str(v) for v in env.version)
    subject = f"Python {ver}"
    if tuple(env.version[:2]) < (3, 8):
        return Result(FAIL, subject, f"{env.executable} is older than 3.8 (Noetic's Python)", VENV_FIX)
    rospy, err = env.try_import("rospy")
    if rospy is None:
        return Result(FAIL, subject, f"{env.executable} cannot import rospy ({_err(err)}): "
                      f"{_interpreter_advice(env)}", VENV_FIX)
    origin = os.path.dirname(os.path.dirname(getattr(rospy, "__file__", "") or "")) or "?"
    return Result(OK, subject, f"{env.executable} imports rospy from {origin}")


def _check_module(env: Env, name: str, extra: Sequence[str], install: str) -> Result:
    for module in (name, *extra):
        _mod, err = env.try_import(module)
        if err is None:
            continue
        if _numpy_abi_error(err):
            return Result(FAIL, name, f"{module} fails under this numpy ({_err(err)})",
                          "see the numpy line")
        if env.try_import("rospy")[1] is not None:
            return Result(FAIL, name, f"cannot import {module} ({_err(err)})", "fix the Python line first")
        return Result(FAIL, name, f"cannot import {module} ({_err(err)})", install)
    return Result(OK, name, "imports")


def check_actionlib(env: Env) -> Result:
    """actionlib imports (the ~train action server)."""
    return _check_module(env, "actionlib", (), "Debian: apt install python3-actionlib; Noetic: "
                         "apt install ros-noetic-actionlib")


def check_cv_bridge(env: Env) -> Result:
    """cv_bridge and its compiled extension import (image topics)."""
    return _check_module(env, "cv_bridge", ("cv_bridge.boost.cv_bridge_boost",),
                         "Debian: apt install python3-cv-bridge; Noetic: apt install ros-noetic-cv-bridge")


def check_numpy(env: Env) -> Result:
    """numpy's version, and whether cv2 and cv_bridge (built against numpy 1.x) import under it."""
    numpy, err = env.try_import("numpy")
    if numpy is None:
        return Result(FAIL, "numpy", f"cannot import numpy ({_err(err)})", NUMPY_FIX)
    version = str(getattr(numpy, "__version__", "?"))
    subject = f"numpy {version}"
    failures = [(m, e) for m, e in ((m, env.try_import(m)[1]) for m in
                                    ("cv2", "cv_bridge.boost.cv_bridge_boost")) if e is not None]
    abi = [(m, e) for m, e in failures if _numpy_abi_error(e)]
    seen = "; ".join(f"{m}: {_err(e)}" for m, e in abi or failures)
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 2:
        if failures:
            return Result(FAIL, subject, "Debian's/Noetic's cv2 and cv_bridge are built against numpy "
                          f"1.x ({seen})", NUMPY_FIX)
        return Result(WARN, subject, "cv2 and cv_bridge import, but ROS 1's are built against numpy 1.x",
                      f"if images fail, {NUMPY_FIX}")
    if abi:
        return Result(FAIL, subject, f"a module was built against another numpy ({seen}); a pip "
                      "opencv-python built for numpy 2 may shadow Debian's cv2",
                      "in the venv run: pip uninstall opencv-python opencv-python-headless")
    if failures:
        return Result(FAIL, subject, f"cannot import {seen}",
                      "Debian: apt install python3-opencv python3-cv-bridge")
    return Result(OK, subject, "cv2 and cv_bridge import under it")


def check_messages(env: Env) -> Result:
    """The generated ml_bridge messages, services and action import (workspace built and sourced)."""
    for module, attr in (("ml_bridge.msg", "Tensor"), ("ml_bridge.srv", "Predict"),
                         ("ml_bridge.msg", "TrainAction")):
        mod, err = env.try_import(module)
        if mod is not None and not hasattr(mod, attr):
            err = ImportError(f"{module} has no {attr}: the workspace was built from older messages")
        if err is not None:
            package, _ = env.try_import("ml_bridge")
            where = os.path.dirname(getattr(package, "__file__", "") or "") or "?"
            return Result(FAIL, "ml_bridge messages", f"cannot import {module}.{attr} ({_err(err)}); "
                          f"ml_bridge is imported from {where}",
                          "`source build/env.sh` (`make setup` builds the workspace first)")
    return Result(OK, "ml_bridge messages", "ml_bridge.msg, ml_bridge.srv and the Train action import")


class _TimeoutTransport(xmlrpc.client.Transport):
    """XML-RPC over HTTP with a socket timeout, so an unanswering master cannot hang us."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def check_master(env: Env) -> Result:
    """The ROS master at ROS_MASTER_URI answers (optional: only running nodes need it)."""
    uri = env.environ.get("ROS_MASTER_URI", "")
    if not uri:
        return Result(WARN, "ROS master", "ROS_MASTER_URI is not set", "`source build/env.sh`")
    start = time.monotonic()
    try:
        proxy = xmlrpc.client.ServerProxy(uri, transport=_TimeoutTransport(env.master_timeout))
        reply: Any = proxy.getPid("/ml_bridge_doctor")
        code, message, pid = reply
    except (OSError, xmlrpc.client.Error, http.client.HTTPException, ValueError) as err:
        waited = time.monotonic() - start
        return Result(WARN, "ROS master", f"none answers at {uri} ({_err(err)}, {waited:.1f} s); "
                      "nodes need one, the unit tests and doctor do not", "start one: roscore")
    if code != 1:
        return Result(WARN, "ROS master", f"{uri} answered getPid with an error: {message}",
                      "restart it: roscore")
    return Result(OK, "ROS master", f"{uri} answers (pid {pid})")
