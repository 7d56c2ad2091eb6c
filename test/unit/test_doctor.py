"""ml_bridge.doctor: each check with faked imports, the exit code, and one real run."""
import io
import os
import socket
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List

import pytest

from ml_bridge import doctor
from ml_bridge.doctor import FAIL, OK, WARN, Env, Result

REPO = Path(__file__).resolve().parents[2]
ABI_ERROR = ImportError("numpy.core.multiarray failed to import")
PYENV = "/home/me/.pyenv/versions/3.12.1"


def fake_importer(modules: Dict[str, Any]) -> Callable[[str], Any]:
    """Imports from ``modules``: a value is returned, an exception raised, a missing name fails."""
    asked: List[str] = []

    def importer(name: str) -> Any:
        asked.append(name)
        value = modules.get(name, ModuleNotFoundError(f"No module named '{name}'"))
        if isinstance(value, BaseException):
            raise value
        return value

    importer.asked = asked  # type: ignore[attr-defined]
    return importer


def ros_modules(numpy_version: str = "1.26.4", **overrides: Any) -> Dict[str, Any]:
    modules: Dict[str, Any] = {
        "rospy": SimpleNamespace(__file__="/usr/lib/python3/dist-packages/rospy/__init__.py"),
        "actionlib": SimpleNamespace(), "cv_bridge": SimpleNamespace(),
        "cv_bridge.boost.cv_bridge_boost": SimpleNamespace(), "cv2": SimpleNamespace(),
        "numpy": SimpleNamespace(__version__=numpy_version),
    }
    modules.update(overrides)
    return modules


def test_numpy_2_breaking_cv2_and_cv_bridge_names_the_fix() -> None:
    env = Env(importer=fake_importer(ros_modules(
        "2.0.1", cv2=ABI_ERROR,
        **{"cv_bridge.boost.cv_bridge_boost": AttributeError("_ARRAY_API not found")})))
    result = doctor.check_numpy(env)
    assert result.status == FAIL and result.failed
    line = result.line()
    assert line.startswith("FAIL numpy 2.0.1: Debian's/Noetic's cv2 and cv_bridge are built against "
                           "numpy 1.x")
    assert "numpy.core.multiarray failed to import" in line and "_ARRAY_API not found" in line
    assert line.endswith("— in the venv run: pip install 'numpy<2' 'ml_dtypes<0.6'")
    bridge = doctor.check_cv_bridge(env)
    assert bridge.status == FAIL and "numpy" in bridge.fix


def test_numpy_2_when_the_modules_still_import_is_a_warning() -> None:
    result = doctor.check_numpy(Env(importer=fake_importer(ros_modules("2.1.0"))))
    assert result.status == WARN and "numpy<2" in result.fix


def test_numpy_1_with_a_cv2_built_for_numpy_2() -> None:
    result = doctor.check_numpy(Env(importer=fake_importer(ros_modules(
        cv2=ImportError("module compiled against ABI version 0x2000000 but this version of numpy is "
                        "0x1000009")))))
    assert result.status == FAIL and "opencv-python" in result.fix


def test_numpy_1_and_imports_fine() -> None:
    result = doctor.check_numpy(Env(importer=fake_importer(ros_modules())))
    assert result.status == OK and result.line() == "OK   numpy 1.26.4: cv2 and cv_bridge import under it"


def test_missing_rospy_explains_the_interpreter() -> None:
    env = Env(importer=fake_importer({}), executable=f"{PYENV}/bin/python", prefix=PYENV,
              base_prefix=PYENV, version=(3, 12, 1))
    result = doctor.check_python(env)
    assert result.status == FAIL
    line = result.line()
    assert f"Python 3.12.1: {PYENV}/bin/python cannot import rospy (ModuleNotFoundError" in line
    assert "pyenv/conda Python does not see /usr/lib/python3/dist-packages" in line
    assert "/usr/bin/python3 -m venv --system-site-packages" in result.fix
    assert doctor.check_actionlib(env).fix == "fix the Python line first"


def test_missing_rospy_in_a_venv_without_system_site_packages(tmp_path: Path) -> None:
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    env = Env(importer=fake_importer({}), executable=str(tmp_path / "bin" / "python"),
              prefix=str(tmp_path), base_prefix="/usr")
    result = doctor.check_python(env)
    assert result.status == FAIL and "made without --system-site-packages" in result.detail


def test_missing_actionlib_names_the_package() -> None:
    modules = ros_modules()
    del modules["actionlib"]
    result = doctor.check_actionlib(Env(importer=fake_importer(modules)))
    assert result.status == FAIL and "python3-actionlib" in result.fix


def test_imports_are_done_once_per_env() -> None:
    importer = fake_importer(ros_modules())
    env = Env(importer=importer)
    doctor.run_checks(env, [doctor.check_numpy, doctor.check_cv_bridge, doctor.check_numpy])
    asked = importer.asked  # type: ignore[attr-defined]
    assert sorted(asked) == sorted(set(asked))


def test_backends_optional_each_but_one_required() -> None:
    torch = SimpleNamespace(__version__="2.13.0+cpu", version=SimpleNamespace(cuda=None),
                            cuda=SimpleNamespace(is_available=lambda: False))
    only_torch = Env(importer=fake_importer({"torch": torch}))
    assert doctor.backend_check("torch")(only_torch).line() == (
        "OK   torch 2.13.0+cpu: devices: cpu (CPU-only build, no CUDA)")
    assert doctor.backend_check("tensorflow")(only_torch).status == WARN
    assert doctor.check_backends(only_torch).line() == "OK   backends: torch"
    neither = Env(importer=fake_importer({}))
    assert doctor.backend_check("torch")(neither).status == WARN
    assert doctor.check_backends(neither).status == FAIL


def test_doctor_asks_each_registered_backend_for_its_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_bridge.backends import Probe
    from ml_bridge.core.registry import Registry

    asked: List[str] = []

    def probe(try_import: Callable[[str], Any]) -> Probe:
        asked.append("jax")
        module, err = try_import("jax")
        return (Probe("jax", "0.4.30", "cpu") if err is None
                else Probe("jax", error=err, install="pip install jax"))

    backends: Registry[Any] = Registry("backend")
    backends.register("jax", SimpleNamespace(probe=probe))
    monkeypatch.setattr(doctor, "BACKENDS", backends)
    env = Env(importer=fake_importer({"jax": SimpleNamespace()}))
    assert doctor.backend_check("jax")(env).line() == "OK   jax 0.4.30: devices: cpu"
    assert doctor.check_backends(env).line() == "OK   backends: jax"
    assert asked == ["jax"]  # probed once per Env
    missing = doctor.backend_check("jax")(Env(importer=fake_importer({})))
    assert missing.status == WARN and missing.fix == "pip install jax"
    assert "the jax backend is unavailable" in missing.detail


def test_messages_not_importable_says_source_env() -> None:
    result = doctor.check_messages(Env(importer=fake_importer({"ml_bridge": SimpleNamespace()})))
    assert result.status == FAIL and "source build/env.sh" in result.fix


@pytest.fixture
def unused_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def test_master_unreachable_is_a_warning_without_waiting(unused_port: int) -> None:
    env = Env(environ={"ROS_MASTER_URI": f"http://127.0.0.1:{unused_port}/"})
    result = doctor.check_master(env)
    assert result.status == WARN and not result.failed and result.fix == "start one: roscore"
    assert "refused" in result.detail  # answered by the OS at once, not by a timeout


def test_a_master_that_never_answers_cannot_hang_doctor() -> None:
    results: List[Result] = []
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        env = Env(environ={"ROS_MASTER_URI": f"http://127.0.0.1:{port}/"}, master_timeout=0.3)
        check = threading.Thread(target=lambda: results.append(doctor.check_master(env)),
                                 daemon=True)
        check.start()
        check.join(60.0)  # a bound on a hang, not a speed test: the timeout is what ends it
    assert results, "check_master still waits on a master that never answers"
    assert results[0].status == WARN and "timed out" in results[0].detail


def test_master_uri_unset() -> None:
    assert doctor.check_master(Env(environ={})).status == WARN


def test_ros_2_sourced_is_a_failure() -> None:
    result = doctor.check_ros(Env(environ={"ROS_VERSION": "2", "ROS_DISTRO": "humble"}))
    assert result.status == FAIL and "ROS 2" in result.detail


def constant(result: Result) -> Callable[[Env], Result]:
    return lambda env: result


def test_main_exit_code_follows_required_checks() -> None:
    out = io.StringIO()
    passing = [constant(Result(OK, "a", "fine")), constant(Result(WARN, "b", "optional", "do x"))]
    assert doctor.main([], checks=passing, env=Env(), out=out) == 0
    assert out.getvalue().splitlines() == ["OK   a: fine", "WARN b: optional — do x"]
    out = io.StringIO()
    assert doctor.main([], checks=passing + [constant(Result(FAIL, "c", "broken", "fix c"))],
                       env=Env(), out=out) != 0
    assert out.getvalue().splitlines()[-1] == "FAIL c: broken — fix c"


def test_a_check_that_crashes_is_reported_as_a_failure() -> None:
    def check_broken(env: Env) -> Result:
        raise KeyError("oops")

    out = io.StringIO()
    assert doctor.main([], checks=[check_broken], env=Env(), out=out) == 1
    assert out.getvalue().startswith("FAIL check_broken: the check itself raised KeyError")


def test_real_run_of_the_ros_checks_in_this_process() -> None:
    results = doctor.run_checks(Env(), [doctor.check_python, doctor.check_actionlib,
                                        doctor.check_cv_bridge, doctor.check_numpy])
    assert [r.status for r in results] == [OK] * 4, [r.line() for r in results]


@pytest.mark.skipif(not (REPO / "build" / "env.sh").is_file(), reason="workspace not built (make setup)")
def test_rosrun_doctor_in_this_environment(unused_port: int) -> None:
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{unused_port}/")
    run = subprocess.run(["bash", "-c", "source build/env.sh && exec rosrun ml_bridge doctor"],
                         cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120)
    lines = run.stdout.splitlines()
    # nothing else between the report's lines: TensorFlow's C++ log ("I0000 ... port.cc",
    # "WARNING: All log messages before absl::InitializeLog()", "E0000 ... cuInit") included
    assert all(line[:5] in ("OK   ", "WARN ", "FAIL ") for line in lines), run.stdout

    def status(subject: str) -> str:
        found = [line[:4].strip() for line in lines if line[5:].startswith(subject)]
        assert len(found) == 1, f"one line for {subject!r} expected in:\n{run.stdout}"
        return found[0]

    for subject in ("ROS 1", "Python", "actionlib", "cv_bridge", "numpy", "backends", "ml_bridge messages"):
        assert status(subject) == OK, run.stdout
    assert status("ROS master") == WARN
    assert run.returncode == 0, run.stdout


def test_native_stderr_is_silenced_while_a_check_runs_and_restored_after(
        capfd: pytest.CaptureFixture[str]) -> None:
    def check_noisy(env: Env) -> Result:
        os.write(2, b"I0000 00:00:1.0 12 port.cc:153] oneDNN custom operations are on.\n")
        return Result(OK, "noisy", "fine")

    out = io.StringIO()
    assert doctor.main([], checks=[check_noisy], env=Env(), out=out) == 0
    os.write(2, b"after\n")
    assert out.getvalue() == "OK   noisy: fine\n"
    assert capfd.readouterr().err == "after\n"
