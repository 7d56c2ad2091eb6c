"""ml_bridge.core.registry.Registry: one way to name backends, pipelines, sinks, datasets."""
import subprocess
import sys
import threading
from typing import Any, Callable, List

import pytest

from ml_bridge.core.errors import BackendError, InputError
from ml_bridge.core.registry import Registry


def test_register_by_call_and_by_decorator_then_get() -> None:
    reg: Registry[Any] = Registry("widget")

    @reg.register("Round", aliases=("disc",))
    def round_widget() -> str:
        return "round"

    assert reg.register("square", len) is len
    assert reg.get("round") is round_widget
    assert reg.get("  DISC ") is round_widget  # case, blanks and aliases
    assert reg.get("square") is len
    assert reg.names() == ["round", "square"] and list(reg) == ["round", "square"] and len(reg) == 2
    assert "Disc" in reg and "hexagon" not in reg and 3 not in reg


def test_a_duplicate_name_is_refused_naming_where_the_first_came_from() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("one", 1, aliases=("uno",))
    first = reg.origin("one")
    assert first.startswith(__file__ + ":"), first
    for taken in ("one", " ONE", "uno"):
        with pytest.raises(ValueError, match=f"widget '{taken.strip().lower()}' is registered already, "
                                             f"by {first}"):
            reg.register(taken, 2)
    with pytest.raises(ValueError, match="registered already"):
        reg.register("two", 2, aliases=("one",))  # an alias may not take a name either
    assert reg.get("one") == 1 and "two" not in reg  # the refused registration left nothing


@pytest.mark.parametrize("error", [InputError, BackendError, KeyError])
def test_an_unknown_name_lists_the_valid_ones_in_the_registrys_error(error: type) -> None:
    reg: Registry[int] = Registry("widget", error)
    reg.register("b", 2)
    reg.register("a", 1)
    with pytest.raises(error, match="unknown widget 'c'; valid widgets: a, b"):
        reg.get("c")


def test_a_lazy_entry_is_imported_on_first_use_only() -> None:
    reg: Registry[Any] = Registry("thing")
    name = "test_registry_lazy_target"
    sys.modules.pop(name, None)
    reg.register("json-dumps", "json:dumps", lazy=True)
    reg.register("module", "json", lazy=True)
    reg.register("missing", f"{name}:nothing", lazy=True)
    import json

    assert reg.get("json-dumps") is json.dumps and reg.get("module") is json
    assert name not in sys.modules
    with pytest.raises(InputError, match=f"thing 'missing' cannot be loaded from {name}:nothing"):
        reg.get("missing")
    with pytest.raises(TypeError, match="import path"):
        reg.register("bad", object(), lazy=True)


def test_the_backend_registry_names_its_frameworks_without_importing_them() -> None:
    code = ("import sys\nfrom ml_bridge.core.registry import BACKENDS\n"
            "print(BACKENDS.names(), BACKENDS.canonical('PyTorch'), BACKENDS.canonical('keras'))\n"
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env_with_src()).stdout.split("\n")
    assert out[0] == "['tensorflow', 'torch'] torch tensorflow"
    assert out[1] == "False False"


def _env_with_src() -> "dict[str, str]":
    import os

    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), src])))


def test_concurrent_registrations_of_one_name_let_exactly_one_win() -> None:
    reg: Registry[int] = Registry("widget")
    start = threading.Barrier(8)
    outcomes: List[str] = []

    def register(i: int) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                reg.register("same", i)
                outcomes.append("won")
            except ValueError:
                outcomes.append("refused")
        return run

    threads = [threading.Thread(target=register(i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


def test_bag_datasets_are_offered_once_the_node_registers_their_loader(tmp_path: Any) -> None:
    """Core alone loads .npz; ``.bag`` is the ROS layer's, registered by the node explicitly."""
    code = ("from ml_bridge.core.errors import DatasetError\n"
            "from ml_bridge.core.resolve import DatasetResolver\n"
            f"resolver = DatasetResolver({str(tmp_path)!r})\n"
            "try:\n    resolver.load('run.bag')\nexcept DatasetError as err:\n    print('CORE', err)\n"
            "from ml_bridge.ros import bag_dataset as bag\n"
            "bag.register_loader(); bag.register_loader()\n"
            "try:\n    resolver.load('run.bag')\nexcept DatasetError as err:\n    print('ROS', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env_with_src())
    lines = out.stdout.splitlines()
    assert lines[0].startswith("CORE unknown dataset 'run.bag'; built-in: digits"), out.stdout + out.stderr
    assert lines[0].endswith("or a file under ~data_root (.npz)"), lines[0]
    assert lines[1] == f"ROS no file 'run.bag' under the data root {tmp_path}", out.stdout + out.stderr
