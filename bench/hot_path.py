"""What one ``~predict`` call costs in the handler, piece by piece, against the hand-written one.

``python -m bench.hot_path`` (``make profile`` runs it first) builds the node's handler path
for torch ``digits_mlp`` in this process, without rospy: the request as rospy hands it over
(bytes in a Tensor message), our conversion, validation, the model call through the
ModelServer (context restored, model lock, inline), the class and the response message, and
the hand-written node's handler (``bench.handwritten``) on the same request. Each line is the
best of 5 runs of 5,000 calls on one thread, hot; what the two handlers share (rospy's
transport) is not in it. The differences are what ml_bridge adds per call.
"""
import os
import sys
import time
from typing import Callable, List, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/server sets it

import numpy as np


def best_us(fn: Callable[[], object], calls: int = 5000, runs: int = 5) -> float:
    """The best mean time of ``runs`` runs of ``calls`` calls, in microseconds."""
    for _ in range(calls // 5):
        fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def pieces() -> List[Tuple[str, Callable[[], object]]]:
    """(name, call) of both handlers and of the pieces of ours."""
    import torch
    from ml_bridge.msg import Tensor
    from ml_bridge.srv import PredictRequest, PredictResponse

    from bench.handwritten import torch_model
    from bench.local import load
    from ml_bridge.core.server import ModelServer
    from ml_bridge.core.spec import validate_inputs
    from ml_bridge.pipelines.classify import classify
    from ml_bridge.ros.conversions import array_to_tensor, arrays_to_tensors, tensors_to_arrays
    from ml_bridge.ros.model_call import predict_within

    model, context = load("torch", "digits_mlp")
    server = ModelServer(model, context, max_batch=8)
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    request = PredictRequest(inputs=[array_to_tensor(x)])
    labels = [str(i) for i in range(10)]
    run = torch_model()
    arrays = tensors_to_arrays(request.inputs, 1, 10 ** 8)
    pred = server.predict(arrays)
    module = model.module  # type: ignore[attr-defined]

    def handwritten() -> object:
        tensor = request.inputs[0]
        array = np.frombuffer(tensor.data, np.float32).reshape(tuple(tensor.shape)).copy()
        scores, ids, top = run(array)
        out = Tensor("scores", "float32", list(scores.shape), scores.tobytes(), [])
        return PredictResponse(True, "", 1, [out], ids, top, [labels[i] for i in ids])

    def ours() -> object:  # MLBridgeNode.handle_predict without its statistics
        converted = tensors_to_arrays(request.inputs, 1, 10 ** 8)
        prediction = predict_within(server, converted, 30.0)
        classes = classify(prediction)
        return PredictResponse(True, "", prediction.model_version,
                               arrays_to_tensors(prediction.outputs,
                                                 prediction.model.output_names, False),
                               classes.class_ids, classes.scores, classes.labels)

    def bare_module() -> object:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    def in_context() -> object:
        with context:
            return model.predict(arrays)

    return [
        ("hand-written handler", handwritten),
        ("ml_bridge handler", ours),
        ("  request -> arrays (counts, sizes)", lambda: tensors_to_arrays(request.inputs, 1, 10 ** 8)),
        ("  validation against the specs", lambda: validate_inputs(arrays, model.inputs, 10 ** 8)),
        ("  ModelServer.predict", lambda: server.predict(arrays)),
        ("    the executor (context, lock, call)", lambda: server.executor.predict(arrays, None)),
        ("      context + TorchModel.predict", in_context),
        ("      TorchModel.predict", lambda: model.predict(arrays)),
        ("      the module under inference_mode", bare_module),
        ("  class and probability", lambda: classify(pred)),
        ("  outputs -> Tensor messages", lambda: arrays_to_tensors(pred.outputs, ["scores"], False)),
        ("hand-written: the model part", lambda: run(x)),
    ]


def main() -> int:
    """Prints the table."""
    for name, fn in pieces():
        print(f"{name:40s} {best_us(fn):6.1f} us", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
