"""The node a user would write by hand, the peer ``~predict`` is compared with.

``python -m bench.handwritten BACKEND`` serves ``/bench_handwritten/predict`` (ml_bridge/Predict)
the way the tutorials do: the model is called inside the rospy service callback (torch: under
``torch.no_grad()``; TensorFlow: the Keras model called directly), on whatever thread rospy
runs the callback on, with no validation, no model thread, no context restore and no
versioning. The weights are ml_bridge's seeded built-in ``digits_mlp``, the same the node
serves, and the response carries what ``~predict`` answers (raw scores as bytes, class id,
its probability, label), so both sides do the same work for the caller.
"""
import sys
from typing import Callable, List, Tuple

import numpy as np
import rospy
from ml_bridge.msg import Tensor
from ml_bridge.srv import Predict, PredictRequest, PredictResponse

from ml_bridge.core import registry
from ml_bridge.core.model import ModelOptions

#: x [N, 64] float32 -> (scores [N, 10], class ids, probabilities of those classes).
RunFn = Callable[[np.ndarray], Tuple[np.ndarray, List[int], List[float]]]


def torch_model() -> RunFn:
    """digits_mlp as a plain nn.Module, called under no_grad."""
    import torch

    module = registry.load("torch").load_model("digits_mlp", ModelOptions()).module.eval()

    def run(x: np.ndarray) -> Tuple[np.ndarray, List[int], List[float]]:
        with torch.no_grad():
            scores = module(torch.from_numpy(x))
            top, ids = torch.softmax(scores, dim=1).max(dim=1)
        return scores.numpy(), ids.tolist(), top.tolist()
    return run


def keras_model() -> RunFn:
    """digits_mlp as a plain keras.Model, called directly (eager)."""
    import tensorflow as tf

    model = registry.load("tensorflow").load_model("digits_mlp", ModelOptions()).model

    def run(x: np.ndarray) -> Tuple[np.ndarray, List[int], List[float]]:
        scores = model(x, training=False)
        probs = tf.nn.softmax(scores).numpy()
        ids = probs.argmax(axis=1)
        return scores.numpy(), ids.tolist(), probs[np.arange(len(ids)), ids].tolist()
    return run


def main() -> None:
    """Serves until shut down."""
    backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
    run = torch_model() if backend == "torch" else keras_model()
    labels = [str(i) for i in range(10)]

    def handle(req: PredictRequest) -> PredictResponse:
        tensor = req.inputs[0]
        x = np.frombuffer(tensor.data, np.float32).reshape(tuple(tensor.shape)).copy()
        scores, ids, top = run(x)
        out = Tensor("scores", "float32", list(scores.shape), scores.tobytes(), [])
        return PredictResponse(True, "", 1, [out], ids, top, [labels[i] for i in ids])

    rospy.init_node("bench_handwritten")
    rospy.Service("/bench_handwritten/predict", Predict, handle)
    rospy.spin()


if __name__ == "__main__":
    main()
