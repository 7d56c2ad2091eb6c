"""Figures that need no master: tensor serialization, context restore, micro-batching, and the
in-process sides (model call, image frame, training) that the ROS figures divide by.
"""
import queue
import threading
import time
from io import BytesIO
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from bench.common import Figure, p50, time_calls
from ml_bridge.core import registry
from ml_bridge.core.context import Context
from ml_bridge.core.execution import ModelThread
from ml_bridge.core.model import BackendModel, ModelOptions
from ml_bridge.core.server import ModelServer


def load(backend: str, model: str) -> Tuple[BackendModel, Context]:
    """Loads a model on this thread (main) and captures its context, as the node does."""
    loaded: BackendModel = registry.load(backend).load_model(model, ModelOptions())
    return loaded, loaded.capture_context()


# -- 2. tensor_bytes_speedup, tensor_bytes_vs_memcpy ---------------------------------------------
def tensor_bytes(elements: int, reps: int) -> Tuple[Figure, Figure]:
    """genpy serialize + deserialize of a float32 Tensor via ``values`` vs ``data``, and
    ``data`` vs a numpy copy of the same bytes. No master: genpy with BytesIO only.
    """
    from ml_bridge.msg import Tensor

    array = np.random.default_rng(0).random(elements, dtype=np.float32)
    by_values = Tensor(dtype="float32", shape=[elements], values=array.astype(np.float64).tolist())
    by_data = Tensor(dtype="float32", shape=[elements], data=array.tobytes())

    def roundtrip(msg: Any) -> Callable[[], Any]:
        def run() -> Any:
            buff = BytesIO()
            msg.serialize(buff)
            return Tensor().deserialize(buff.getvalue())
        return run

    out = roundtrip(by_data)()
    assert out.data == by_data.data, "data path did not round-trip"
    speed = Figure("tensor_bytes_speedup", ">= 10", details={"elements": elements})
    memcpy = Figure("tensor_bytes_vs_memcpy", "<= 5", details={"elements": elements})
    inner = max(1, min(50, 10_000_000 // max(elements, 1)))
    for _ in range(reps):
        t_values = p50(time_calls(roundtrip(by_values), 1 if elements >= 100_000 else inner))
        t_data = p50(time_calls(roundtrip(by_data), inner))
        t_copy = p50(time_calls(array.copy, inner))
        speed.values.append(t_values / t_data)
        memcpy.values.append(t_data / t_copy)
        speed.details.setdefault("values_ms", []).append(t_values * 1e3)
        memcpy.details.setdefault("data_ms", []).append(t_data * 1e3)
        memcpy.details.setdefault("numpy_copy_ms", []).append(t_copy * 1e3)
    return speed, memcpy


# -- 7. context_restore_us -----------------------------------------------------------------------
def context_restore(context: Context, key: str, iterations: int, reps: int) -> Figure:
    """Microseconds of one ``with context:``, entered on a fresh thread (as rospy's callback
    threads do) minus the bare loop; the main thread's cost is in the details.
    """
    fig = Figure(key, "(report)", details={"iterations": iterations, "main_thread_us": []})

    def per_call() -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            pass
        bare = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(iterations):
            with context:
                pass
        return max(0.0, time.perf_counter() - start - bare) / iterations * 1e6

    for _ in range(reps):
        box: List[float] = []
        thread = threading.Thread(target=lambda out=box: out.append(per_call()))  # type: ignore[misc]
        thread.start()
        thread.join()
        fig.values.append(box[0])
        fig.details["main_thread_us"].append(per_call())
    return fig


# -- 4. batching_speedup -------------------------------------------------------------------------
def batching(model: BackendModel, context: Context, callers: int, calls: int, reps: int,
             image: np.ndarray) -> Figure:
    """``callers`` threads sending batch-1 requests to a ModelServer: throughput with
    max_batch = callers divided by max_batch 1 (in-process; the node adds the same worker).
    """
    inputs = model.preprocess_image(image) if model.preprocess_image else [image]
    fig = Figure("batching_speedup", ">= 2", details={"callers": callers, "calls_per_caller": calls,
                                                      "mode": "in-process ModelServer",
                                                      "mean_rows_per_call": []})

    def throughput(max_batch: int) -> Tuple[float, float]:
        server = ModelServer(model, context, max_batch=max_batch)
        try:
            server.predict(inputs)  # warm
            rows: List[int] = []
            lock = threading.Lock()

            def caller() -> None:
                for _ in range(calls):
                    result = server.executor.submit(list(inputs)).result()
                    with lock:
                        rows.append(result.batched_with)
            threads = [threading.Thread(target=caller) for _ in range(callers)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            return callers * calls / wall, float(np.mean(rows))
        finally:
            server.close()

    for _ in range(reps):
        one, _rows = throughput(1)
        many, rows = throughput(callers)
        fig.values.append(many / one)
        fig.details["mean_rows_per_call"].append(rows)
    return fig


# -- in-process sides of the ROS figures ---------------------------------------------------------
def thread_handoff_times(count: int) -> List[float]:
    """Seconds per round trip to another Python thread and back with nothing else done: a
    SimpleQueue to a waiting thread, a Lock back. The floor of any model-thread design (two
    thread wake-ups), without ml_bridge code.
    """
    requests: queue.SimpleQueue[Optional[threading.Lock]] = queue.SimpleQueue()

    def serve() -> None:
        while True:
            done = requests.get()
            if done is None:
                return
            done.release()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def hop() -> None:
        done = threading.Lock()
        done.acquire()
        requests.put(done)
        done.acquire()

    try:
        time_calls(hop, 50)
        return time_calls(hop, count)
    finally:
        requests.put(None)
        thread.join()


def worker_hop_times(context: Context, inputs: List[np.ndarray], count: int) -> List[float]:
    """Seconds per ModelThread round trip with a model that returns its input (ml_bridge's hop:
    queue, context restore on the model thread, future)."""
    worker = ModelThread(context, lambda arrays: (arrays, 1))
    try:
        time_calls(lambda: worker.submit(inputs).result(), 50)
        return time_calls(lambda: worker.submit(inputs).result(), count)
    finally:
        worker.close()


def model_call_times(model: BackendModel, context: Context, inputs: List[np.ndarray],
                     count: int) -> List[float]:
    """Seconds per in-process model call (BackendModel.predict, context restored)."""
    with context:
        return time_calls(lambda: model.predict(inputs), count)


def frame_times(model: BackendModel, context: Context, image: np.ndarray, count: int,
                seconds: float = 0.0) -> List[float]:
    """Seconds per in-process frame (the model's image preprocessing, then the model): at
    least ``count`` frames, and frames for at least ``seconds`` (a window like the stream's).
    """
    preprocess = model.preprocess_image
    assert preprocess is not None, "the image model has no image preprocessing"
    out: List[float] = []
    end = time.perf_counter() + seconds
    with context:
        while len(out) < count or time.perf_counter() < end:
            out += time_calls(lambda: model.predict(preprocess(image)), 1)
    return out


def fit_seconds(server: ModelServer, dataset: str, epochs: int) -> Dict[str, float]:
    """Wall time of ModelServer.fit in-process, and its mean batch time."""
    batches = [0]

    from ml_bridge.core.training import Callback

    class Count(Callback):
        def on_batch_end(self, batch: int, logs: Any = None) -> None:
            batches[0] += 1

    start = time.perf_counter()
    server.fit(dataset, epochs=epochs, callbacks=[Count()])
    wall = time.perf_counter() - start
    return {"seconds": wall, "batches": float(batches[0]), "batch_s": wall / max(batches[0], 1)}
