"""``rosrun ml_bridge doctor``: checks the set-up ml_bridge needs, one line per check.

Every line is ``OK``, ``WARN`` (something optional is missing) or ``FAIL`` (something required
is broken) with what was found and, for faults, the fix. The exit code is non-zero iff a line
is ``FAIL``.

Each check is a function ``(Env) -> Result``. The backends' lines come from the backends: each
registered one (``ml_bridge.core.registry.BACKENDS``) is asked for its ``probe``, which imports
its framework through the Env, so doctor itself imports no framework. Modules are imported
through ``Env.importer``, so a test can hand in a fake one (numpy 2, a cv2 whose import raises)
without touching the real interpreter; imports are cached per Env, so the checks share them.

While a check runs, file descriptor 2 goes to /dev/null: TensorFlow's C++ logging (absl,
oneDNN, CUDA probing) writes there directly, whatever TF_CPP_MIN_LOG_LEVEL says, and would
land between the report's lines. What a check finds reaches the report through its Result.
"""
import argparse
import contextlib
import http.client
import importlib
import os
import sys
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

from ml_bridge.backends import Probe
from ml_bridge.core.registry import BACKENDS

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: Words in an import error that mean "built against another numpy ABI".
NUMPY_ABI_SIGNS = ("numpy.core.multiarray failed to import", "_ARRAY_API not found",
                   "compiled using NumPy 1.x", "compiled against ABI version",
                   "numpy.core._multiarray_umath", "numpy.dtype size changed")
NUMPY_FIX = "in the venv run: pip install 'numpy<2' 'ml_dtypes<0.6'"
VENV_FIX = ("make the venv from the system Python: /usr/bin/python3 -m venv --system-site-packages "
            ".venv (`make setup` does this), then `source build/env.sh`")


@dataclass(frozen=True)
class Result:
    """The outcome of one check: one line of the report."""

    status: str    # OK, WARN or FAIL
    subject: str   # what was checked, with its version where there is one
    detail: str    # what was found
    fix: str = ""  # what to do about a WARN or FAIL

    @property
    def failed(self) -> bool:
        """True for a required check that failed."""
        return self.status == FAIL

    def line(self) -> str:
        """The report line, e.g. ``FAIL numpy 2.0.1: ... — in the venv run: ...``."""
        text = f"{self.status:<4} {self.subject}: {self.detail}"
        return f"{text} — {self.fix}" if self.fix else text


@dataclass
class Env:
    """What the checks look at; every field can be replaced by a test."""

    importer: Callable[[str], Any] = importlib.import_module
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    executable: str = sys.executable
    prefix: str = sys.prefix
    base_prefix: str = sys.base_prefix
    version: Tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    master_timeout: float = 1.0
    _imports: Dict[str, Tuple[Any, Optional[BaseException]]] = field(default_factory=dict)
    _probes: Dict[str, Probe] = field(default_factory=dict)

    def try_import(self, name: str) -> Tuple[Any, Optional[BaseException]]:
        """(module, None) or (None, the error); each name is imported once per Env."""
        if name not in self._imports:
            try:
                self._imports[name] = (self.importer(name), None)
            except Exception as err:  # reported by the check that asked, never dropped
                self._imports[name] = (None, err)
        return self._imports[name]

    def probe(self, backend: str) -> Probe:
        """What ``backend``'s probe finds, importing through :meth:`try_import`; once per Env."""
        if backend not in self._probes:
            self._probes[backend] = BACKENDS.get(backend).probe(self.try_import)
        return self._probes[backend]


Check = Callable[[Env], Result]


def _err(err: Optional[BaseException]) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _numpy_abi_error(err: Optional[BaseException]) -> bool:
    return err is not None and any(sign in str(err) for sign in NUMPY_ABI_SIGNS)


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


def backend_check(name: str) -> Check:
    """The check of backend ``name``: what its ``probe`` found (its framework is optional)."""
    def check(env: Env) -> Result:
        found = env.probe(name)
        err = found.error
        if err is not None:
            fix = NUMPY_FIX if "ml_dtypes" in str(err) or _numpy_abi_error(err) else found.install
            return Result(WARN, found.framework, f"not importable ({_err(err)}); the {name} "
                          "backend is unavailable", fix)
        return Result(OK, f"{found.framework} {found.version}", f"devices: {found.devices}")

    check.__name__ = f"check_{name}"
    check.__doc__ = f"The {name} backend (optional): its framework's version and devices."
    return check


def check_backends(env: Env) -> Result:
    """At least one backend's framework imports."""
    names = BACKENDS.names()
    found = [name for name in names if env.probe(name).available]
    if not found:
        return Result(FAIL, "backends", f"no backend's framework imports ({', '.join(names)}), so "
                      "no model can be served", "pip install -r requirements.txt in the venv "
                      "(`make setup`)")
    return Result(OK, "backends", ", ".join(found))


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


CHECKS: List[Check] = [check_ros, check_python, check_actionlib, check_cv_bridge, check_numpy,
                       *(backend_check(name) for name in BACKENDS.names()), check_backends,
                       check_messages, check_master]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null for the block, then restores it.

    Native libraries log to the descriptor, not to ``sys.stderr``, so only this silences them.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a daemon): nothing to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_checks(env: Optional[Env] = None, checks: Optional[Sequence[Check]] = None,
               on_result: Optional[Callable[[Result], None]] = None) -> List[Result]:
    """Runs ``checks`` (default: CHECKS) against ``env`` (default: this interpreter).

    ``on_result`` is called with each result as soon as its check is done.
    """
    env = env if env is not None else Env()
    results = []
    for check in checks if checks is not None else CHECKS:
        try:
            with native_stderr_silenced():
                result = check(env)
        except Exception as err:  # a defect of the doctor itself: reported, and it fails the run
            result = Result(FAIL, getattr(check, "__name__", "check"), f"the check itself raised "
                            f"{_err(err)}", "please report this with the output of doctor")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def main(argv: Optional[Sequence[str]] = None, checks: Optional[Sequence[Check]] = None,
         env: Optional[Env] = None, out: Optional[TextIO] = None) -> int:
    """Prints one line per check; returns 1 if a required check failed, else 0."""
    argparse.ArgumentParser(prog="doctor", description="Checks the set-up ml_bridge needs, one line "
                            "per check (OK, WARN or FAIL with its fix); exits 1 if a required check "
                            "fails.").parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    stream = out if out is not None else sys.stdout

    def show(result: Result) -> None:
        line = result.line()
        try:
            print(line, file=stream, flush=True)
        except UnicodeEncodeError:  # a terminal without UTF-8
            print(line.replace("—", "--"), file=stream, flush=True)

    results = run_checks(env, checks, show)
    return 1 if any(r.failed for r in results) else 0
