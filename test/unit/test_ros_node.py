"""MLBridgeNode's handlers without a master: rospy's registering classes replaced by recorders.

The node is built as ``rosrun ml_bridge server`` builds it, around a numpy model (no
framework); its services, subscribers, publishers and timer are stand-ins that keep the
callbacks, so each test calls what rospy would call and reads what the node published.
"""
import struct
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ml_bridge.msg import Prediction, Sample, Tensor
from ml_bridge.srv import GetInfoRequest, PredictRequest
from test_core_server import LinearModel
from test_ros_train_action import FakeActionServer

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.sample_store import SampleStore
from ml_bridge.core.server import ModelServer
from ml_bridge.core.training import Callback
from ml_bridge.ros import node as node_module
from ml_bridge.ros import service_loop, train_action
from ml_bridge.ros.conversions import array_to_image, array_to_tensor, tensor_to_array
from ml_bridge.ros.node import MLBridgeNode, NodeConfig

WAIT = 60.0  # bound on waits for what comes at once when the code works


class ImageLinear(LinearModel):
    """LinearModel that takes images (their mean brightness in every input); may hold calls."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()
        self.calls = 0
        self.preprocess_image = self._image

    @staticmethod
    def _image(image: np.ndarray) -> List[np.ndarray]:
        return [np.full((1, 64), float(image.mean()) / 255.0, np.float32)]

    def check_targets(self, dataset: Dataset) -> None:
        """Class ids as [N] or [N, 1] (a recorded scalar id arrives as [1])."""
        super().check_targets(Dataset(dataset.name, dataset.inputs,
                                      [t.reshape(len(t)) for t in dataset.targets]))

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        self.calls += 1
        self.release.wait(WAIT)  # a test clears it: a forward that does not return in time
        return super().predict(inputs)


class Ros:
    """Stand-ins for rospy.Service, Publisher, Subscriber, Timer; what the node registered."""

    def __init__(self) -> None:
        self.services: Dict[str, Any] = {}
        self.publishers: Dict[str, Any] = {}
        self.subscribers: Dict[str, Any] = {}
        self.timers: List[Any] = []
        self.warnings: List[str] = []
        self.published = threading.Condition()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ros = self

        class Service:
            def __init__(self, name: str, _type: Any, handler: Callable[[Any], Any]) -> None:
                self.resolved_name, self.uri, self.handler = name, "rosrpc://fake:1", handler
                ros.services[name] = self

            def shutdown(self) -> None:
                pass

        class LoopedService(Service):  # ~predict: its handler takes the requests that arrived together
            def __init__(self, name: str, _type: Any, handle_many: Callable[[Any], Any],
                         **_kw: Any) -> None:
                super().__init__(name, _type, lambda req: handle_many([req])[0])
                self.handle_many = handle_many

            def close(self) -> None:
                pass

        class Publisher:
            def __init__(self, name: str, _type: Any, **_kw: Any) -> None:
                self.messages: List[Any] = []
                ros.publishers[name] = self

            def publish(self, msg: Any) -> None:
                with ros.published:
                    self.messages.append(msg)
                    ros.published.notify_all()

            def get_num_connections(self) -> int:
                return 1  # someone listens: streams compute their outputs

            def unregister(self) -> None:
                pass

        class Subscriber:
            def __init__(self, name: str, _type: Any, callback: Callable[[Any], None],
                         **_kw: Any) -> None:
                self.callback = callback
                ros.subscribers[name] = self

            def unregister(self) -> None:
                pass

        class Timer:
            def __init__(self, _period: Any, callback: Callable[[Any], None], **_kw: Any) -> None:
                self.callback = callback
                ros.timers.append(self)

            def shutdown(self) -> None:
                pass

        def warn_throttle(_period: float, text: str, *args: Any) -> None:
            with ros.published:
                ros.warnings.append(text % args if args else text)
                ros.published.notify_all()

        for name, value in (("Service", Service), ("Publisher", Publisher),
                            ("Subscriber", Subscriber), ("Timer", Timer),
                            ("logwarn_throttle", warn_throttle),
                            ("get_param", lambda _name, default=None: default),
                            ("get_param_cached", lambda _name, default=None: default)):
            monkeypatch.setattr(rospy, name, value)
        monkeypatch.setattr(node_module, "LoopedService", LoopedService)
        monkeypatch.setattr(rospy.rostime, "_rostime_initialized", True)  # wall-clock time
        monkeypatch.setattr(train_action.actionlib, "SimpleActionServer",
                            lambda *_a, **_kw: FakeActionServer())

    def wait(self, condition: Callable[[], bool]) -> bool:
        """Waits until ``condition`` holds after a publish or a warning."""
        with self.published:
            return self.published.wait_for(condition, WAIT)


@pytest.fixture
def ros(monkeypatch: pytest.MonkeyPatch) -> Ros:
    stand_ins = Ros()
    stand_ins.install(monkeypatch)
    return stand_ins


@pytest.fixture
def model() -> Iterator[ImageLinear]:
    served = ImageLinear()
    yield served
    served.release.set()  # before the node's teardown: nothing stays stuck


@pytest.fixture
def make_node(ros: Ros, model: ImageLinear, tmp_path: Path) -> Iterator[Callable[..., MLBridgeNode]]:
    nodes: List[MLBridgeNode] = []

    def make(model_thread: str = "auto", **config: Any) -> MLBridgeNode:
        server = ModelServer(model, Context(), max_batch=8, data_root=str(tmp_path / "data"),
                             model_thread=model_thread)
        nodes.append(MLBridgeNode(server, NodeConfig(**config)))
        return nodes[-1]

    yield make
    model.release.set()
    for node in nodes:
        node.shutdown()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return digits(heldout=True).inputs[0][:5]


def predict(ros: Ros, inputs: List[Tensor]) -> Any:
    return ros.services["~predict"].handler(PredictRequest(inputs=inputs))


def test_predict_answers_data_with_data_and_values_with_values(
        make_node: Callable[..., MLBridgeNode], ros: Ros, model: ImageLinear, rows: np.ndarray) -> None:
    make_node()
    by_data = predict(ros, [array_to_tensor(rows)])
    assert by_data.success and by_data.message == "" and by_data.model_version == 1
    assert len(by_data.outputs[0].data) == 5 * 10 * 4 and not by_data.outputs[0].values
    expected = model.predict([rows])[0]
    np.testing.assert_allclose(tensor_to_array(by_data.outputs[0]), expected, rtol=1e-6)
    assert list(by_data.class_ids) == expected.argmax(axis=1).tolist()
    assert list(by_data.labels) == [f"digit {c}" for c in by_data.class_ids]
    assert all(0.0 < s <= 1.0 for s in by_data.scores)
    by_values = predict(ros, [Tensor(shape=[5, 64], values=rows.ravel().tolist())])
    assert by_values.success and not by_values.outputs[0].data
    assert len(by_values.outputs[0].values) == 50
    np.testing.assert_allclose(tensor_to_array(by_values.outputs[0]), expected, rtol=1e-6)


def test_bad_requests_are_refused_naming_the_problem_and_change_nothing(
        make_node: Callable[..., MLBridgeNode], ros: Ros, rows: np.ndarray) -> None:
    node = make_node(max_elements=10_000)
    bad = {
        "complex64": [Tensor(dtype="complex64", shape=[1, 64], data=bytes(512))],
        "100 bytes": [Tensor(shape=[1, 64], data=bytes(100))],
        "63": [array_to_tensor(np.zeros((1, 63), np.float32))],
        "declares more than 10000": [Tensor(shape=[1000, 64], data=bytes(4))],
        "2 input tensor(s)": [array_to_tensor(rows[:1]), array_to_tensor(rows[:1])],
        "whole numbers": [Tensor(dtype="int64", shape=[1, 64], values=[0.5] * 64)],
    }
    for words, inputs in bad.items():
        resp = predict(ros, inputs)
        assert not resp.success and words in resp.message, (words, resp.message)
        assert resp.model_version == 1 and not resp.outputs
    assert predict(ros, [array_to_tensor(rows[:1])]).success  # still serving
    assert (node.stats.requests, node.stats.errors) == (len(bad) + 1, len(bad))


def test_a_model_that_does_not_answer_in_time_is_named_in_the_reply(
        make_node: Callable[..., MLBridgeNode], ros: Ros, model: ImageLinear, rows: np.ndarray) -> None:
    make_node(model_thread="always", timeout=0.2)
    model.release.clear()
    resp = predict(ros, [array_to_tensor(rows)])
    assert not resp.success and resp.model_version == 1
    assert resp.message == "the model did not answer within ~timeout = 0.2 s (it is busy or stuck)"


@pytest.mark.parametrize("model_thread,calls", [("always", 1), ("auto", 4)])
def test_requests_that_arrive_together_are_answered_in_order_each_with_its_own_result(
        make_node: Callable[..., MLBridgeNode], ros: Ros, model: ImageLinear, rows: np.ndarray,
        model_thread: str, calls: int) -> None:
    # On the model thread they are queued together and joined into one call; an inline (CPU)
    # model runs them one after the other on the serving thread.
    node = make_node(model_thread=model_thread)
    good = [array_to_tensor(rows[i:i + 1]) for i in range(4)]
    bad = array_to_tensor(np.zeros((1, 63), np.float32))
    requests = [PredictRequest(inputs=[t]) for t in (good[0], bad, *good[1:])]
    before = model.calls
    answered: List[Any] = []
    free = threading.Event()
    if model_thread == "always":  # the model thread busy until all have queued
        node.server.executor.exclusive(lambda: free.wait(WAIT))
    caller = threading.Thread(target=lambda: answered.extend(
        ros.services["~predict"].handle_many(requests)))
    caller.start()
    deadline = time.monotonic() + WAIT  # until the requests that will queue have queued
    while model_thread == "always" and node.server.executor.queued < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    free.set()
    caller.join(WAIT)
    responses = answered
    assert [r.success for r in responses] == [True, False, True, True, True]
    assert "63" in responses[1].message
    for resp, row in zip([responses[0], *responses[2:]], rows[:4]):
        np.testing.assert_allclose(tensor_to_array(resp.outputs[0]),
                                   model.predict([row[None]])[0], rtol=1e-6)
    assert model.calls - before - 4 == calls  # the 4 checks just above are calls too
    assert (node.stats.requests, node.stats.errors) == (5, 1)


def test_a_wrong_tensor_count_is_refused_from_the_request_bytes_before_deserializing(
        make_node: Callable[..., MLBridgeNode], rows: np.ndarray) -> None:
    node = make_node()
    # 5 million tensors announced: the count alone answers (the rest need not even be there).
    resp = node.screen_predict(struct.pack("<I", 5_000_000))
    assert resp is not None and not resp.success and resp.model_version == 1
    assert resp.message == "request has 5000000 input tensor(s); the model takes 1"
    good = BytesIO()
    PredictRequest(inputs=[array_to_tensor(rows[:1])]).serialize(good)
    assert node.screen_predict(good.getvalue()) is None  # the right count goes on
    assert (node.stats.requests, node.stats.errors) == (1, 1)


def test_millions_of_tensors_are_refused_by_count_before_any_conversion(
        make_node: Callable[..., MLBridgeNode], ros: Ros, model: ImageLinear) -> None:
    make_node()
    resp = predict(ros, [Tensor()] * 5_000_000)
    assert not resp.success and resp.message == "request has 5000000 input tensor(s); the model takes 1"
    resp = predict(ros, [Tensor(shape=[1 << 20, 1 << 20])])
    assert not resp.success and "declares more than" in resp.message
    assert model.calls == 0


class InfoDuringTraining(Callback):
    """Asks ~info after each epoch, while the goal trains."""

    def __init__(self, info: Callable[[Any], Any]) -> None:
        self.info = info
        self.seen: List[Any] = []

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self.seen.append(self.info(GetInfoRequest()))


def test_the_train_action_writes_tensorboard_runs_where_the_config_says(
        make_node: Callable[..., MLBridgeNode], tmp_path: Path) -> None:
    assert make_node(tensorboard_dir=str(tmp_path / "runs")).train.tensorboard_dir == str(
        tmp_path / "runs")  # from ~tensorboard_dir, read with every other parameter
    assert make_node().train.tensorboard_dir == ""


def test_info_describes_the_served_model_and_training(make_node: Callable[..., MLBridgeNode],
                                                      ros: Ros) -> None:
    node = make_node()
    info = ros.services["~info"].handler
    first = info(GetInfoRequest())
    assert (first.backend, first.model, first.model_version, first.training) == ("fake", "linear", 1, False)
    assert [(s.name, s.dtype, list(s.shape)) for s in first.inputs] == [("x", "float32", [-1, 64])]
    assert [(s.name, list(s.shape)) for s in first.outputs] == [("scores", [-1, 10])]
    assert list(first.labels) == [f"digit {i}" for i in range(10)]
    during = InfoDuringTraining(info)
    node.server.fit("digits", epochs=1, callbacks=[during])
    assert [(i.training, i.model_version) for i in during.seen] == [(True, 1)]
    after = info(GetInfoRequest())
    assert (after.training, after.model_version) == (False, 2)


def test_samples_that_fit_are_stored_and_others_refused_and_counted(
        make_node: Callable[..., MLBridgeNode], ros: Ros, tmp_path: Path, rows: np.ndarray) -> None:
    node = make_node(default_dataset="field")
    receive = ros.subscribers["~samples"].callback
    for i in range(3):
        receive(Sample(inputs=[array_to_tensor(rows[i])],
                       targets=[array_to_tensor(np.asarray(i, np.int64))]))
    receive(Sample(dataset="other", inputs=[array_to_tensor(np.zeros(63, np.float32))],
                   targets=[array_to_tensor(np.asarray(1, np.int64))]))  # does not fit
    assert node.samples.wait_idle(WAIT)
    stats = node.samples.stats()
    assert (stats["samples_received"], stats["samples_stored"], stats["samples_refused"]) == (4, 3, 1)
    stored = SampleStore(str(tmp_path / "data")).load("field")
    np.testing.assert_array_equal(stored.inputs[0], rows[:3])
    assert stored.targets[0].ravel().tolist() == [0, 1, 2]
    assert not (tmp_path / "data" / "recorded" / "other.mlbs").exists()


def diagnostics(ros: Ros) -> Dict[str, str]:
    """The node's status values from the last /diagnostics message."""
    msg: DiagnosticArray = ros.publishers["/diagnostics"].messages[-1]
    status = [s for s in msg.status if s.name.endswith("model")]
    assert len(status) == 1, [s.name for s in msg.status]
    return {kv.key: kv.value for kv in status[0].values}


def test_diagnostics_count_requests_errors_samples_and_stream_frames(
        make_node: Callable[..., MLBridgeNode], ros: Ros, rows: np.ndarray) -> None:
    node = make_node(image="/cam/image")
    predict(ros, [array_to_tensor(rows)])
    predict(ros, [Tensor(shape=[1, 64], data=bytes(3))])
    ros.subscribers["~samples"].callback(Sample(inputs=[array_to_tensor(rows[0])],
                                                targets=[array_to_tensor(np.asarray(7, np.int64))]))
    assert node.samples.wait_idle(WAIT)
    ros.subscribers["/cam/image"].callback(array_to_image(np.zeros((16, 16), np.uint8)))
    assert ros.wait(lambda: bool(ros.publishers["~predictions"].messages))
    node.updater.force_update()  # what the node's 1 Hz timer does once a period has passed
    values = diagnostics(ros)
    assert (values["backend"], values["model"], values["model_version"]) == ("fake", "linear", "1")
    assert (values["requests"], values["errors"], values["training"]) == ("2", "1", "False")
    assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"]) >= 0.0
    assert (values["samples_received"], values["samples_stored"]) == ("1", "1")
    assert values["stream /cam/image: published_predictions"] == "1"


def test_diagnostics_outlive_a_master_that_does_not_answer(make_node: Callable[..., MLBridgeNode],
                                                           ros: Ros, monkeypatch: pytest.MonkeyPatch) -> None:
    node = make_node()

    def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(node.updater, "update", refused)  # it reads ~diagnostic_period
    ros.timers[0].callback(None)  # an exception here would end rospy's timer thread for good
    assert ros.warnings == ["diagnostics not published: the ROS master does not answer "
                            "([Errno 111] Connection refused)"]


def test_a_stream_skips_a_frame_the_model_does_not_answer_in_time_and_says_so(
        make_node: Callable[..., MLBridgeNode], ros: Ros, model: ImageLinear) -> None:
    make_node(model_thread="always", image="/cam/image", timeout=0.2)
    camera = ros.subscribers["/cam/image"].callback
    model.release.clear()
    camera(array_to_image(np.zeros((16, 16), np.uint8)))
    assert ros.wait(lambda: bool(ros.warnings))
    assert ros.warnings == ["frame skipped on /cam/image: the model did not answer within "
                            "~timeout = 0.2 s (it is busy or stuck)"]
    model.release.set()  # the model answers again: the next frame is published, header kept
    frame = array_to_image(np.full((16, 16), 200, np.uint8))
    frame.header.frame_id = "cam"
    camera(frame)
    published = ros.publishers["~predictions"].messages
    assert ros.wait(lambda: bool(published))
    prediction: Prediction = published[-1]
    assert prediction.header.frame_id == "cam" and len(prediction.class_ids) == 1


def test_diagnostics_turn_error_with_the_cause_while_recordings_fail(
        make_node: Callable[..., MLBridgeNode], ros: Ros, tmp_path: Path) -> None:
    rules = [{"name": "seen", "all": [{"key": "score", "op": ">=", "value": 0.0}],
              "record": {"topics": ["/other"]}}]
    node = make_node(image="/cam/image", rules=rules, record_dir=str(tmp_path / "rec"))
    (tmp_path / "rec").rmdir()
    (tmp_path / "rec").write_text("")  # a file where the directory was: no bag can be made
    ros.subscribers["/cam/image"].callback(array_to_image(np.zeros((16, 16), np.uint8)))
    events = ros.publishers["~events"].messages
    assert ros.wait(lambda: bool(events))
    assert events[0].rule == "seen" and events[0].bag == ""  # no bag will appear
    node.updater.force_update()
    msg: DiagnosticArray = ros.publishers["/diagnostics"].messages[-1]
    (status,) = [s for s in msg.status if s.name.endswith("model")]
    assert status.level == DiagnosticStatus.ERROR
    assert status.message.startswith("recordings fail, the last: rule 'seen': FileExistsError")


def ours() -> List[threading.Thread]:
    """Threads of ml_bridge alive now (rospy's own, and other tests' leftovers, aside)."""
    return [t for t in threading.enumerate()
            if t.is_alive() and (t.name.startswith("ml_bridge") or t.name.startswith("service "))]


def test_shutdown_stops_the_predict_loop_and_leaves_no_thread_of_ours(
        make_node: Callable[..., MLBridgeNode], ros: Ros, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "LoopedService", service_loop.LoopedService)  # the real loop
    before = set(ours())
    node = make_node(model_thread="always", image="/cam/image")
    started = {t.name for t in set(ours()) - before}
    assert started >= {node.predict_srv.thread.name, "ml_bridge-model",
                       "ml_bridge-stream-/cam/image", "ml_bridge-samples"}
    node.shutdown()
    assert not node.predict_srv.thread.is_alive()
    assert [t.name for t in set(ours()) - before] == []
    node.shutdown()  # a second shutdown (rospy's hook after a test's) returns at once


def test_shutdown_closes_the_rest_when_one_part_fails_and_raises_that_failure(
        make_node: Callable[..., MLBridgeNode], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "LoopedService", service_loop.LoopedService)
    node = make_node(model_thread="always", image="/cam/image")

    def broken(timeout: Optional[float] = 10.0) -> None:
        raise OSError(5, "Input/output error")

    real_close = node.samples.close
    monkeypatch.setattr(node.samples, "close", broken)  # closed before the streams and ~predict
    with pytest.raises(OSError, match="Input/output error"):
        node.shutdown()
    assert not node.predict_srv.thread.is_alive()
    assert not node.streams[0].stream.thread.is_alive()
    assert not node.server.executor.thread.is_alive()  # type: ignore[attr-defined]
    real_close()
