#!/usr/bin/env python3
"""Integration tests of the ml_bridge node over real ROS: run by torch.test / tensorflow.test.

Each .test file starts a master, the node (backend from the `backend` arg) with fresh
checkpoint and data directories, and this test node. The tests share that node but not
their state: each trains what it needs, names its own datasets, compares versions and
outputs with what it read first, and waits on messages and goal states, never on time.
Any order passes.
"""
import os
import signal
import subprocess
import sys
import threading
import unittest
from typing import Any, Callable, List, Tuple

import actionlib
import numpy as np
import rosbag
import rospy
from actionlib_msgs.msg import GoalStatus, GoalStatusArray
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import Prediction, Sample, Tensor, TrainAction, TrainFeedback, TrainGoal
from ml_bridge.srv import GetInfo, Predict
from sensor_msgs.msg import Image

import rostest
from ml_bridge.core.datasets import digits
from ml_bridge.ros.conversions import array_to_image, array_to_tensor, tensor_to_array

NS = "/ml_bridge"
WAIT = 300.0  # bound on every wait: training on a loaded 2-core machine


def call_predict(inputs: List[Tensor]):  # type: ignore[no-untyped-def]
    return rospy.ServiceProxy(NS + "/predict", Predict)(inputs=inputs)


def info():  # type: ignore[no-untyped-def]
    return rospy.ServiceProxy(NS + "/info", GetInfo)()


class TrainRun:
    """Sends a goal and records its feedback."""

    def __init__(self, client: actionlib.SimpleActionClient, goal: TrainGoal) -> None:
        self.feedback: List[TrainFeedback] = []
        self.first = threading.Event()
        self.client = client
        client.send_goal(goal, feedback_cb=self._fb)

    def _fb(self, fb: TrainFeedback) -> None:
        self.feedback.append(fb)
        self.first.set()

    def wait(self, timeout: float = WAIT) -> Tuple[int, Any]:
        self.client.wait_for_result(rospy.Duration(timeout))
        return self.client.get_state(), self.client.get_result()


class Latest:
    """The latest message of a topic that passes ``keep``; waits for one that satisfies a test."""

    def __init__(self, topic: str, msg_type: Any, keep: Callable[[Any], Any] = lambda m: m) -> None:
        self.value: Any = None
        self._keep = keep
        self._cond = threading.Condition()
        self.sub = rospy.Subscriber(topic, msg_type, self._on)

    def _on(self, msg: Any) -> None:
        value = self._keep(msg)
        if value is not None:
            with self._cond:
                self.value = value
                self._cond.notify_all()

    def wait_for(self, test: Callable[[Any], bool], timeout: float = WAIT) -> Any:
        with self._cond:
            assert self._cond.wait_for(lambda: self.value is not None and test(self.value), timeout), \
                f"no message on {self.sub.name} passed the test within {timeout} s (last: {self.value})"
            return self.value


def node_values(msg: DiagnosticArray) -> Any:
    """The key/values of the ml_bridge node's status in a /diagnostics message (None if absent)."""
    for status in msg.status:
        if status.name.startswith("ml_bridge:") and status.name.endswith("model"):
            values = {kv.key: kv.value for kv in status.values}
            return values if "requests" in values else None  # not the "starting up" one
    return None


class Connected(rospy.SubscribeListener):
    """Sets ``event`` when a subscriber connects to the publisher: rospy's only such event."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def peer_subscribe(self, topic_name: str, topic_publish: Any, peer_publish: Any) -> None:
        self.event.set()


def connected_publisher(topic: str, msg_type: Any, queue_size: int) -> rospy.Publisher:
    """A publisher that the node has connected to (so nothing published is lost before)."""
    listener = Connected()
    pub = rospy.Publisher(topic, msg_type, queue_size=queue_size, subscriber_listener=listener)
    assert listener.event.wait(60), f"the node did not subscribe to {topic}"
    return pub


class NodeTest(unittest.TestCase):
    client: actionlib.SimpleActionClient
    backend: str
    data_root: str
    checkpoint_dir: str
    x: np.ndarray
    y: np.ndarray
    diagnostics: Latest

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("ml_bridge_node_test")
        cls.backend = rospy.get_param("~backend")
        cls.data_root = rospy.get_param("~data_root")
        cls.checkpoint_dir = rospy.get_param("~checkpoint_dir")
        rospy.wait_for_service(NS + "/predict", timeout=120)
        cls.client = actionlib.SimpleActionClient(NS + "/train", TrainAction)
        assert cls.client.wait_for_server(rospy.Duration(60))
        cls.diagnostics = Latest("/diagnostics", DiagnosticArray, node_values)
        held = digits(heldout=True)
        cls.x, cls.y = held.inputs[0], held.targets[0]

    def train(self, **kw: Any) -> Tuple[int, Any, List[TrainFeedback]]:
        run = TrainRun(self.client, TrainGoal(**kw))
        state, result = run.wait()
        return state, result, run.feedback

    def outputs(self, rows: int = 40) -> np.ndarray:
        resp = call_predict([array_to_tensor(self.x[:rows])])
        self.assertTrue(resp.success, resp.message)
        return tensor_to_array(resp.outputs[0])

    def accuracy(self) -> float:
        resp = call_predict([array_to_tensor(self.x)])
        self.assertTrue(resp.success, resp.message)
        return float(np.mean(np.asarray(resp.class_ids) == self.y))

    def test_info_describes_the_served_model(self) -> None:
        i = info()
        self.assertEqual(i.backend, self.backend)
        self.assertEqual(i.model, i.model.strip())
        self.assertIn("digits_mlp", i.model)
        self.assertEqual([list(s.shape) for s in i.inputs], [[-1, 64]])
        self.assertEqual(i.inputs[0].dtype, "float32")
        self.assertEqual(list(i.outputs[0].shape), [-1, 10])
        self.assertEqual(list(i.labels), [str(d) for d in range(10)])
        self.assertFalse(i.training)
        self.assertTrue(i.framework_version)
        self.assertEqual(call_predict([array_to_tensor(self.x[:1])]).model_version, i.model_version)

    def test_predict_data_and_values(self) -> None:
        rows = self.x[:5]
        by_data = call_predict([array_to_tensor(rows)])
        self.assertTrue(by_data.success, by_data.message)
        self.assertEqual(len(by_data.class_ids), 5)
        self.assertEqual(len(by_data.outputs[0].data), 5 * 10 * 4)  # data in -> data out
        by_values = call_predict([Tensor(shape=[5, 64], values=rows.ravel().tolist())])
        self.assertTrue(by_values.success, by_values.message)
        self.assertEqual(len(by_values.outputs[0].data), 0)         # values in -> values out
        self.assertEqual(len(by_values.outputs[0].values), 50)
        np.testing.assert_allclose(tensor_to_array(by_values.outputs[0]),
                                   tensor_to_array(by_data.outputs[0]), rtol=1e-5, atol=1e-6)
        self.assertEqual(list(by_data.class_ids), list(by_values.class_ids))
        for s in by_data.scores:
            self.assertTrue(0.0 < s <= 1.0)
        self.assertEqual(list(by_data.labels), [str(c) for c in by_data.class_ids])

    def test_many_persistent_callers_each_get_their_own_answer(self) -> None:
        # One thread serves every ~predict connection and answers requests that arrive
        # together as a batch: each caller must still get the answer to its own rows.
        alone = [call_predict([array_to_tensor(self.x[i:i + 1 + i % 3])]) for i in range(8)]
        wrong: List[str] = []

        def caller(i: int) -> None:
            proxy = rospy.ServiceProxy(NS + "/predict", Predict, persistent=True)
            try:
                for _ in range(50):
                    resp = proxy(inputs=[array_to_tensor(self.x[i:i + 1 + i % 3])])
                    same = (resp.model_version == alone[i].model_version
                            and list(resp.class_ids) == list(alone[i].class_ids)
                            and np.allclose(tensor_to_array(resp.outputs[0]),
                                            tensor_to_array(alone[i].outputs[0]),
                                            rtol=1e-4, atol=1e-5))
                    if not same:
                        wrong.append(f"caller {i}: {list(resp.class_ids)}")
            except Exception as err:  # a failed call fails the test below
                wrong.append(f"caller {i}: {type(err).__name__}: {err}")
            finally:
                proxy.close()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        self.assertEqual([t for t in threads if t.is_alive()], [])  # no call left unanswered
        self.assertEqual(wrong, [])

    def test_bad_requests_refused(self) -> None:
        bad = {
            "unknown dtype": [Tensor(dtype="complex64", shape=[1, 64], data=bytes(512))],
            "byte count": [Tensor(shape=[1, 64], data=bytes(100))],
            "shape": [array_to_tensor(np.zeros((1, 63), np.float32))],
            "rank": [array_to_tensor(np.zeros((64,), np.float32))],
            "too many elements": [Tensor(shape=[100000000, 64], data=bytes(4))],
            "input count": [array_to_tensor(self.x[:1]), array_to_tensor(self.x[:1])],
        }
        before = info().model_version
        for kind, inputs in bad.items():
            resp = call_predict(inputs)
            self.assertFalse(resp.success, kind)
            self.assertTrue(resp.message, kind)
        self.assertTrue(call_predict([array_to_tensor(self.x[:1])]).success)  # still serving
        self.assertEqual(info().model_version, before)

    def test_invalid_goals_aborted(self) -> None:
        outside = os.path.join(os.path.dirname(self.data_root.rstrip("/")), "outside.npz")
        os.makedirs(os.path.dirname(outside), exist_ok=True)
        np.savez(outside, inputs=self.x, targets=self.y)
        before = info().model_version
        for goal, words in ((TrainGoal(epochs=0, dataset="digits"), "epochs"),
                            (TrainGoal(epochs=1, dataset="no_such_dataset"), "unknown dataset"),
                            (TrainGoal(epochs=1, dataset="../outside.npz"), "outside"),
                            (TrainGoal(epochs=1, dataset="digits", validation_split=1.5), "validation")):
            state, result, fb = self.train(**{k: getattr(goal, k) for k in goal.__slots__})
            self.assertEqual(state, GoalStatus.ABORTED, goal)
            self.assertIn(words, result.message)
            self.assertEqual(fb, [])
        self.assertEqual(info().model_version, before)

    def test_train_feedback_accuracy_and_concurrent_predict(self) -> None:
        before = info().model_version
        errors: List[str] = []
        versions: List[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                resp = call_predict([array_to_tensor(self.x[:8])])
                (versions if resp.success else errors).append(resp.model_version if resp.success
                                                              else resp.message)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        state, result, feedback = self.train(epochs=15, dataset="digits", validation_split=0.1)
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(state, GoalStatus.SUCCEEDED, result.message)
        self.assertEqual([f.epoch for f in feedback], list(range(1, 16)))
        self.assertTrue(all(f.epochs == 15 for f in feedback))
        for name in ("accuracy", "val_loss", "val_accuracy"):
            self.assertIn(name, feedback[-1].metric_names)
        self.assertEqual(errors, [])
        self.assertGreater(len(versions), 0)
        self.assertEqual(set(versions) - {before, before + 1}, set())
        self.assertEqual(result.model_version, before + 1)
        self.assertTrue(os.path.isfile(result.checkpoint), result.checkpoint)
        self.assertTrue(result.checkpoint.startswith(self.checkpoint_dir))
        self.assertEqual(info().model_version, before + 1)
        self.assertGreaterEqual(self.accuracy(), 0.85)

    def test_cancel_within_a_batch_keeps_version(self) -> None:
        before = info().model_version
        served = self.outputs()
        # batch size 1: an epoch is 1500 batches, so stopping "within a batch" ends in epoch 2.
        run = TrainRun(self.client, TrainGoal(epochs=50, batch_size=1, dataset="digits",
                                              learning_rate=0.5))
        self.assertTrue(run.first.wait(WAIT))
        self.client.cancel_goal()
        state, result = run.wait()
        self.assertEqual(state, GoalStatus.PREEMPTED)
        self.assertEqual(result.epochs_completed, 1)
        self.assertEqual(len(run.feedback), 1)
        self.assertEqual(result.model_version, before)
        self.assertEqual(info().model_version, before)
        np.testing.assert_array_equal(self.outputs(), served)  # the wild learning rate was not kept

    def test_new_goal_preempts_the_running_one(self) -> None:
        other = actionlib.SimpleActionClient(NS + "/train", TrainAction)
        self.assertTrue(other.wait_for_server(rospy.Duration(30)))
        first = TrainRun(self.client, TrainGoal(epochs=50, batch_size=1, dataset="digits"))
        self.assertTrue(first.first.wait(WAIT))
        second = TrainRun(other, TrainGoal(epochs=1, dataset="digits"))
        state, _ = first.wait()
        self.assertEqual(state, GoalStatus.PREEMPTED)
        state, result = second.wait()
        self.assertEqual(state, GoalStatus.SUCCEEDED, result.message)
        self.assertEqual(len(second.feedback), 1)

    def test_diagnostics_count_requests_and_errors(self) -> None:
        start = self.diagnostics.wait_for(lambda v: True)
        for key in ("model", "model_version", "device", "training", "requests", "errors",
                    "latency_p50_ms", "latency_p95_ms", "samples_stored", "samples_dropped"):
            self.assertIn(key, start)
        requests, errors = int(start["requests"]), int(start["errors"])
        self.assertTrue(call_predict([array_to_tensor(self.x[:1])]).success)
        self.assertFalse(call_predict([Tensor(shape=[1, 64], data=bytes(3))]).success)
        # Other requests may come in between: at least ours are counted.
        self.diagnostics.wait_for(lambda v: int(v["requests"]) >= requests + 2
                                  and int(v["errors"]) >= errors + 1)

    def test_samples_recorded_then_trained_by_name(self) -> None:
        start = self.diagnostics.wait_for(lambda v: True)
        stored, refused = int(start["samples_stored"]), int(start["samples_refused"])
        pub = connected_publisher(NS + "/samples", Sample, queue_size=100)
        for i in range(40):
            pub.publish(Sample(dataset="field", inputs=[array_to_tensor(self.x[i])],
                               targets=[array_to_tensor(self.y[i:i + 1].astype(np.int64)[0])]))
        pub.publish(Sample(dataset="field", inputs=[array_to_tensor(np.zeros(63, np.float32))],
                           targets=[array_to_tensor(np.asarray(1, np.int64))]))  # does not fit: refused
        self.diagnostics.wait_for(lambda v: int(v["samples_stored"]) >= stored + 40
                                  and int(v["samples_refused"]) >= refused + 1)
        pub.unregister()
        self.assertTrue(os.path.isfile(os.path.join(self.data_root, "recorded", "field.mlbs")))
        state, result, _ = self.train(epochs=1, dataset="field")
        self.assertEqual(state, GoalStatus.SUCCEEDED, result.message)

    def test_bag_dataset(self) -> None:
        path = os.path.join(self.data_root, "samples.bag")
        os.makedirs(self.data_root, exist_ok=True)
        with rosbag.Bag(path, "w") as bag:
            for i in range(30):
                bag.write("/ml_bridge/samples",
                          Sample(inputs=[array_to_tensor(self.x[i])],
                                 targets=[array_to_tensor(np.asarray(self.y[i], np.int64))]))
        state, result, feedback = self.train(epochs=2, dataset="samples.bag")
        self.assertEqual(state, GoalStatus.SUCCEEDED, result.message)
        self.assertEqual(len(feedback), 2)

    def test_cli_train_predict_and_ctrl_c(self) -> None:
        done = subprocess.run(["rosrun", "ml_bridge", "train", "--epochs", "2", "--dataset", "digits"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT)
        out = done.stdout.decode(errors="replace")
        self.assertEqual(done.returncode, 0, out)
        self.assertIn("SUCCEEDED", out)
        self.assertIn("2/2", out)  # the progress bar reached the last epoch
        version = info().model_version
        # Ctrl+C cancels the goal, waits for PREEMPTED and exits 2; the served version is kept.
        status = Latest(NS + "/train/status", GoalStatusArray,
                        lambda m: [s for s in m.status_list if "ml_bridge_train" in s.goal_id.id
                                   and s.status == GoalStatus.ACTIVE] or None)
        proc = subprocess.Popen(["rosrun", "ml_bridge", "train", "--epochs", "50", "--batch-size", "1",
                                 "--dataset", "digits"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            status.wait_for(lambda active: True)  # the CLI's goal is being trained
        finally:
            status.sub.unregister()
        proc.send_signal(signal.SIGINT)  # as Ctrl+C
        out = proc.communicate(timeout=WAIT)[0].decode(errors="replace")
        self.assertEqual(proc.returncode, 2, out)
        self.assertIn("PREEMPTED", out)
        self.assertEqual(info().model_version, version)
        npy = os.path.join(self.data_root, "rows.npy")
        os.makedirs(self.data_root, exist_ok=True)
        np.save(npy, self.x[:3])
        pred = subprocess.run(["rosrun", "ml_bridge", "predict", "--npy", npy],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = pred.stdout.decode(errors="replace")
        self.assertEqual(pred.returncode, 0, text)
        self.assertEqual(text.count("row "), 3, text)
        self.assertIn("score", text)

    def test_image_topic_header(self) -> None:
        if not rospy.get_param("~image_topic", ""):
            self.skipTest("no image topic in this launch")
        got: List[Prediction] = []
        arrived = threading.Condition()

        def on_pred(p: Prediction) -> None:
            with arrived:
                got.append(p)
                arrived.notify_all()

        def answer_to(frame: Image, resend: bool) -> Prediction:
            """Waits for the prediction that carries ``frame``'s stamp."""
            def answered() -> bool:
                return any(p.header.stamp == frame.header.stamp for p in got)

            with arrived:
                tries = int(WAIT) if resend else 1
                while not arrived.wait_for(answered, 1.0 if resend else WAIT):
                    tries -= 1
                    self.assertGreater(tries, 0, f"no prediction for the {frame.encoding} frame")
                    pub.publish(frame)
                return [p for p in got if p.header.stamp == frame.header.stamp][-1]

        sub = rospy.Subscriber(NS + "/predictions", Prediction, on_pred)
        pub = connected_publisher(rospy.get_param("~image_topic"), Image, queue_size=1)
        digit = (self.x[3].reshape(8, 8) * 255).astype(np.uint8)
        big = np.kron(digit, np.ones((16, 16), np.uint8))  # 128 x 128
        rgb = np.repeat(big[:, :, None], 3, axis=2)
        frames = ((rgb, "rgb8"), (big, "mono8"), (rgb[:, :, ::-1].copy(), "bgr8"),
                  (big, "8UC1"), (rgb[:, :, ::-1].copy(), "8UC3"))
        for k, (arr, enc) in enumerate(frames):
            msg = array_to_image(arr, enc)
            msg.header.frame_id = f"camera_{k}"
            msg.header.stamp = rospy.Time(1000 + k, 5)
            pub.publish(msg)
            # The node computes predictions only while someone subscribes, and rospy tells a
            # subscriber nothing when its connection is up: the first frame is sent again
            # until it is answered. Later frames are sent once.
            last = answer_to(msg, resend=k == 0)
            self.assertEqual(last.header.frame_id, f"camera_{k}")
            self.assertEqual(len(last.class_ids), 1)
            self.assertEqual(last.labels[0], str(last.class_ids[0]))
            self.assertEqual(last.class_ids[0], got[0].class_ids[0], enc)  # same digit each time
        sub.unregister()
        pub.unregister()

    def test_restart_serves_newest_checkpoint(self) -> None:
        state, result, _ = self.train(epochs=1, dataset="digits")  # a checkpoint of its own
        self.assertEqual(state, GoalStatus.SUCCEEDED, result.message)
        version = info().model_version
        self.assertEqual(result.model_version, version)
        expected = call_predict([array_to_tensor(self.x[:20])])
        proc = subprocess.Popen(
            ["rosrun", "ml_bridge", "server", "__name:=ml_bridge_restarted",
             f"_backend:={self.backend}", "_model:=digits_mlp",
             f"_checkpoint_dir:={self.checkpoint_dir}", f"_data_root:={self.data_root}"],
            stdout=sys.stdout, stderr=sys.stderr)
        try:
            rospy.wait_for_service("/ml_bridge_restarted/info", timeout=120)
            again = rospy.ServiceProxy("/ml_bridge_restarted/info", GetInfo)()
            self.assertEqual(again.model_version, version)
            resp = rospy.ServiceProxy("/ml_bridge_restarted/predict", Predict)(
                inputs=[array_to_tensor(self.x[:20])])
            self.assertEqual(list(resp.class_ids), list(expected.class_ids))
            np.testing.assert_allclose(tensor_to_array(resp.outputs[0]),
                                       tensor_to_array(expected.outputs[0]), rtol=1e-4, atol=1e-5)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "node_test", NodeTest, sys.argv)
