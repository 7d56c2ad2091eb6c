"""Every registered backend package: the same modules, and an API that imports no framework early."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from ml_bridge.core.registry import BACKENDS

SRC = Path(__file__).resolve().parents[2] / "src"
BACKEND_DIR = SRC / "ml_bridge" / "backends"
#: What ml_bridge.backends' docstring promises every backend package.
MODULES = ["__init__", "averaged", "builtins", "core", "detector", "export", "loading", "model",
           "specs", "trainer"]
API = ("load_model", "framework_version", "devices", "set_threads", "probe")


def _run(code: str) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC),
                                                                    os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", BACKENDS.names())
def test_each_backend_has_the_same_modules(name: str) -> None:
    modules: List[str] = sorted(p.stem for p in (BACKEND_DIR / name).glob("*.py"))
    assert modules == MODULES


def test_naming_and_probing_a_backend_imports_no_framework() -> None:
    out = _run(
        "import importlib, json, sys\n"
        "from ml_bridge.core.registry import BACKENDS\n"
        "def try_import(name):\n"
        "    return None, ImportError(f'not now: {name}')\n"
        f"api = {{n: set({API!r}) <= set(BACKENDS.get(n).__all__) for n in BACKENDS.names()}}\n"
        "probes = {n: str(BACKENDS.get(n).probe(try_import).error) for n in BACKENDS.names()}\n"
        "frameworks = sorted(m for m in sys.modules\n"
        "                    if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))\n"
        "print(json.dumps({'api': api, 'probes': probes, 'frameworks': frameworks}))\n")
    assert out["frameworks"] == []
    assert out["api"] == {name: True for name in BACKENDS.names()}
    assert out["probes"] == {name: f"not now: {name}" for name in BACKENDS.names()}


def test_a_missing_framework_is_a_backend_error_at_first_use() -> None:
    # sys.modules[name] = None makes `import name` raise ImportError, as if it were missing.
    out = _run(
        "import json, sys\n"
        "sys.modules['torch'] = None\n"
        "from ml_bridge.core import registry\n"
        "from ml_bridge.core.errors import BackendError\n"
        "from ml_bridge.core.model import ModelOptions\n"
        "backend = registry.load('torch')\n"
        "try:\n"
        "    backend.load_model('digits_mlp', ModelOptions())\n"
        "    message = ''\n"
        "except BackendError as err:\n"
        "    message = str(err)\n"
        "print(json.dumps({'message': message}))\n")
    message = str(out["message"])
    assert message.startswith("backend 'torch' cannot be imported (")
    assert message.endswith("run `make setup` or `rosrun ml_bridge doctor`")


def test_an_unknown_attribute_of_a_backend_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        BACKENDS.get("torch").nothing_here  # noqa: B018
