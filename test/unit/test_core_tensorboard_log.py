"""TensorBoard runs of training goals (``~tensorboard_dir``): one run per goal, one point per epoch."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import backends
import pytest

from ml_bridge.core.errors import TrainingError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.tensorboard_log import TensorBoardLog, run_name

pytest.importorskip("tensorboard", reason="tensorboard not installed (requirements.txt)")


def _read_scalars(run_dir: str) -> Dict[str, List[float]]:
    """What TensorBoard itself reads from the run: tag -> values by step (1-based epochs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir)
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(range(1, len(events) + 1)), tag
        out[tag] = [e.value for e in events]
    return out


@pytest.mark.parametrize("backend", backends.ALL)
def test_each_epoch_of_a_goal_is_a_point_of_its_run(backend: str, tmp_path: Path) -> None:
    server = ModelServer.load(backend, "digits_mlp")
    runs = []
    for _ in range(2):  # two goals: two runs, named by the version each one trains
        board = TensorBoardLog(str(tmp_path), run_name(server.model.source, server.version + 1))
        result = server.fit("digits", epochs=2, validation_split=0.2, callbacks=[board])
        board.close()
        runs.append(board.path)
        scalars = _read_scalars(board.path)
        assert set(scalars) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert all(len(values) == 2 for values in scalars.values()), scalars
        assert scalars["loss"][-1] == pytest.approx(result.logs["loss"], rel=1e-6)
        assert scalars["val_accuracy"][-1] == pytest.approx(result.logs["val_accuracy"], rel=1e-6)
    names = [os.path.basename(path) for path in runs]
    assert names[0].startswith("digits_mlp-v2-") and names[1].startswith("digits_mlp-v3-"), names
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_writing_a_run_does_not_import_a_framework(tmp_path: Path) -> None:
    """A torch node logging to TensorBoard must not load TensorFlow (tensorboard's own
    EventFileWriter does, when TensorFlow is installed)."""
    code = (
        "import json, sys\n"
        "from ml_bridge.core.tensorboard_log import TensorBoardLog\n"
        f"board = TensorBoardLog({str(tmp_path)!r}, 'm-v2-x')\n"
        "board.on_train_begin({}); board.on_epoch_end(0, {'loss': 1.5}); board.on_train_end({})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch'))))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []
    assert _read_scalars(str(tmp_path / "m-v2-x")) == {"loss": [1.5]}


def test_run_names_are_path_safe_and_distinct(tmp_path: Path) -> None:
    assert run_name("/models/My Net.keras", 7, when=0).startswith("My_Net.keras-v7-")
    assert run_name("pkg.mod:make", 1).startswith("pkg.mod_make-v1-")
    first, second = TensorBoardLog(str(tmp_path), "m-v1-t"), TensorBoardLog(str(tmp_path), "m-v1-t")
    first.on_train_begin()
    second.on_train_begin()  # the same second, the same name: its own directory all the same
    first.close()
    second.close()
    assert (os.path.basename(first.path), os.path.basename(second.path)) == ("m-v1-t", "m-v1-t-2")


def test_an_unwritable_tensorboard_dir_is_refused_with_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match="tensorboard_dir .*file"):
        TensorBoardLog(str(blocker / "runs"), "m-v1-t")
