"""The node's own ``~`` parameters, declared once: the model it serves and how it serves it.

``config/server.yaml`` and ``launch/server.launch`` give the same defaults (a test holds them
to this declaration); :class:`ml_bridge.core.server.ModelServer` takes its defaults from here
too. The image pipelines declare theirs in their own classes.
"""
import os
from typing import List

from ml_bridge.core.allocator import DEFAULT_KEEP_MB, MAX_KEEP_MB
from ml_bridge.core.execution import MODEL_THREAD_MODES
from ml_bridge.core.params import Param, Schema, bad
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS


def image_topics(value: object) -> str:
    """``~image``: topic names separated by spaces; true/false is the old form (``image``/none).

    Raises:
        TypeError: neither a string nor true/false.
    """
    if value is True or str(value).strip().lower() == "true":
        return "image"  # subscribe to `image`, remapped
    if value is False or str(value).strip().lower() in ("false", "0"):
        return ""
    if not isinstance(value, str):
        raise TypeError(value)
    return value


#: What ``~labels`` accepts, in the reference and in its errors.
LABELS_ACCEPT = ("a list of labels, one comma-separated string, or the path of a text file with "
                 "one label a line")
#: Endings that make a ``~labels`` string a file's path even when no such file exists.
LABEL_FILE_ENDINGS = (".txt", ".names", ".labels")


def labels_value(value: object) -> List[str]:
    """``~labels``: a list, one comma-separated string, or a text file's path (a string
    without commas that names a file, holds a ``/`` or ends in .txt, .names or .labels).

    A file holds one label a line, line i being class id i; blank lines at the end are ignored.

    Raises:
        ParameterError: a file that is missing, unreadable, empty or has a blank line among its
            labels (which would shift every id after it).
        TypeError: neither a list nor a string.
    """
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if not isinstance(value, str):
        raise TypeError(value)
    text = value.strip()
    path = os.path.expanduser(text)
    if "," in text or not (os.path.isfile(path) or "/" in text
                           or text.lower().endswith(LABEL_FILE_ENDINGS)):
        return [s.strip() for s in text.split(",") if s.strip()]
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except OSError as err:
        raise bad("labels", LABELS_ACCEPT, value, f"cannot read {os.path.abspath(path)}: "
                  f"{err.strerror or err} (a relative path is from the node's working directory, "
                  "usually ~/.ros: give an absolute one, e.g. $(find my_pkg)/labels.txt)") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise bad("labels", LABELS_ACCEPT, value, f"{path} holds no labels; write one a line")
    if "" in lines:
        raise bad("labels", LABELS_ACCEPT, value, f"line {lines.index('') + 1} of {path} is "
                  "blank; write one label on every line (line i is class id i)")
    return lines


#: The node's parameters, in the order of the reference.
NODE_PARAMS = Schema(
    "node",
    # What is served.
    Param("backend", "str", "torch", "`torch` or `tensorflow` (also `pytorch`, `tf`, `keras`)",
          launch=True),
    Param("model", "str", "digits_mlp", "a built-in name, a `package.module:callable` factory "
          "or a model file", launch=True),
    Param("device", "str", "cpu", "`cpu`, `cuda`, `cuda:N`", launch=True),
    Param("input_tensor", "str", "", "frozen `.pb`: input tensor name(s), comma-separated; "
          "SavedModel: the order of the signature's inputs", launch=True),
    Param("output_tensor", "str", "", "the same, for outputs", launch=True),
    Param("labels", "names", [], "class labels; they replace the model's and make it a "
          "classifier (`[]`: the model's own)", accepts=LABELS_ACCEPT, convert=labels_value),
    Param("checkpoint_dir", "str", "", "where trained weights are saved; at start-up the newest "
          "good checkpoint is served (`\"\"`: none are saved)", launch=True,
          launch_default="$(env HOME)/.ros/ml_bridge/checkpoints"),
    Param("data_root", "str", "", "the only directory dataset files are read from; recorded "
          "data goes to its `recorded/` folder", launch=True,
          launch_default="$(env HOME)/.ros/ml_bridge/data"),
    # How it is served.
    Param("model_thread", "str", "auto", "where a `~predict` request runs: on the serving "
          "thread (`never`), queued on the model thread (`always`), or `auto`",
          choices=MODEL_THREAD_MODES,
          note="auto: on the caller's thread for CPU models", launch=True),
    Param("max_batch", "int", 8, "micro-batching: the most rows waiting requests are joined "
          "into", low=1, note="1 = no micro-batching", launch=True),
    Param("threads", "int", 0, "CPU threads of the framework's operators, set before the model "
          "loads", low=0, note="0 = the framework's default", launch=True),
    Param("max_elements", "int", DEFAULT_MAX_ELEMENTS, "the largest request accepted, in "
          "elements", low=1),
    Param("keep_checkpoints", "int", 5, "checkpoints kept per model after each save, newest "
          "first; the served one is never deleted", low=0, note="0 = keep all", launch=True),
    Param("keep_freed_mb", "int", DEFAULT_KEEP_MB, "freed memory kept per heap for the next "
          "frame's buffers, set at start-up", low=0, high=MAX_KEEP_MB,
          note="MiB; 0 = the C library's defaults"),
    Param("timeout", "float", 30.0, "how long a request may wait for the model", low=0.0,
          above=True, note="seconds"),
    # Streams.
    Param("image", "str", "", "the image topic(s) to subscribe to, one stream each", launch=True,
          accepts="image topic names separated by spaces", convert=image_topics),
    Param("pipeline", "str", "classify", "what streams do with frames: `classify`, `segment`, "
          "`clip`, `objects`, `detect`", launch=True),
    Param("detections", "str", "detections", "`objects`: the detections topic(s), one per "
          "camera in the order of `~image`", launch=True),
    Param("queue_size", "int", 1, "image subscriber queue size", low=1,
          note="1 = the latest frame wins", launch=True),
    Param("image_buff_size", "int", 1 << 23, "how much rospy reads from an image connection at "
          "once: several frames, so a backlog is drained and the latest frame wins", low=1,
          note="bytes"),
    Param("publish_outputs", "bool", False, "fill `Prediction.outputs` on `~predictions`"),
    # Training and recording.
    Param("default_dataset", "str", "recorded", "the dataset of `~samples` messages whose "
          "`dataset` is empty"),
    Param("tensorboard_dir", "str", "", "each `~train` goal writes a TensorBoard run here "
          "(`\"\"`: off)", launch=True),
    Param("rules", "any", [], "rules that turn results into events and recordings (each rule "
          "is checked when the node starts)"),
    Param("record_dir", "str", "~/.ros/ml_bridge/recordings", "where rules write their bags"),
    Param("record_buffer_mb", "float", 256.0, "memory for the last `before` seconds of every "
          "recorded topic, all topics together", low=0.0, above=True, note="MiB"),
    Param("upload_retry_max", "float", 60.0, "the longest wait between two tries of a rule's "
          "`upload` (the wait doubles from 1 s after each failed try)", low=0.0, above=True,
          note="seconds"),
    Param("upload_outbox_mb", "float", 64.0, "disk for events waiting to be uploaded, under "
          "`~record_dir`/outbox; when full the oldest are dropped (and counted)", low=0.0,
          above=True, note="MiB"),
)
