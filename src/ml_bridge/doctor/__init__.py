"""``rosrun ml_bridge doctor``: checks the set-up ml_bridge needs, one line per check.

Every line is ``OK``, ``WARN`` (something optional is missing) or ``FAIL`` (something required
is broken) with what was found and, for faults, the fix. The exit code is non-zero iff a line
is ``FAIL``.

Each check is a function ``(Env) -> Result`` (:mod:`.report`); the checks of ROS, the
interpreter, numpy, the messages and the master are in :mod:`.checks`. The backends' lines come
from the backends: each registered one (``ml_bridge.core.registry.BACKENDS``) is asked for its
``probe``, which imports its framework through the Env, so doctor itself imports no framework.
Modules are imported through ``Env.importer``, so a test can hand in a fake one (numpy 2, a cv2
whose import raises) without touching the real interpreter; imports are cached per Env, so the
checks share them.

While a check runs, file descriptor 2 goes to /dev/null: TensorFlow's C++ logging (absl,
oneDNN, CUDA probing) writes there directly, whatever TF_CPP_MIN_LOG_LEVEL says, and would
land between the report's lines. What a check finds reaches the report through its Result.
"""
import argparse
import contextlib
import os
import sys
from typing import Callable, Iterator, List, Optional, Sequence, TextIO

from ml_bridge.backends import Probe
from ml_bridge.core.registry import BACKENDS
from ml_bridge.doctor.checks import (
    check_actionlib,
    check_cv_bridge,
    check_master,
    check_messages,
    check_numpy,
    check_python,
    check_ros,
)
from ml_bridge.doctor.report import (
    FAIL,
    NUMPY_FIX,
    OK,
    VENV_FIX,
    WARN,
    Check,
    Env,
    Result,
    _err,
    _numpy_abi_error,
)

__all__ = ["CHECKS", "FAIL", "NUMPY_FIX", "OK", "VENV_FIX", "WARN", "Check", "Env", "Result",
           "backend_check", "check_actionlib", "check_backends", "check_cv_bridge",
           "check_master", "check_messages", "check_numpy", "check_python", "check_ros", "main",
           "native_stderr_silenced", "probe", "run_checks"]


def probe(env: Env, backend: str) -> Probe:
    """What ``backend``'s probe finds, importing through ``env.try_import``; once per Env."""
    if backend not in env.probes:
        env.probes[backend] = BACKENDS.get(backend).probe(env.try_import)
    return env.probes[backend]


def backend_check(name: str) -> Check:
    """The check of backend ``name``: what its ``probe`` found (its framework is optional)."""
    def check(env: Env) -> Result:
        found = probe(env, name)
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
    found = [name for name in names if probe(env, name).available]
    if not found:
        return Result(FAIL, "backends", f"no backend's framework imports ({', '.join(names)}), so "
                      "no model can be served", "pip install -r requirements.txt in the venv "
                      "(`make setup`)")
    return Result(OK, "backends", ", ".join(found))


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
