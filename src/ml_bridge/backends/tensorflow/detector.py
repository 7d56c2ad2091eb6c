"""The built-in detector ``shapes_det`` (Keras), its loss and its ``map50`` metric.

The torch built-in's network, channels last: stages at 1/2, 1/4, 1/8 and 1/16 of the frame,
the deepest joined back to 1/8, and per cell of the 1/8 grid a heatmap score per class, the
box centre's offset in the cell and the box size. It serves the YOLOv8 layout
``[N, 4 + C, A]`` (cx, cy, w, h in input pixels, then class probabilities), as the torch one
does, and trains on :class:`ml_bridge.core.box_targets.CenterGrid` targets.
"""
import math
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from ml_bridge.backends.tensorflow.builtins import conv_bn_relu
from ml_bridge.core.box_metrics import MAP50, MapTally
from ml_bridge.core.box_targets import CenterGrid
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.shape_scenes import SCENE_LABELS
from ml_bridge.core.vision import ImageFormat

#: What ``shapes_det`` takes: 128 x 128 RGB, pixel / 255 centred on 0.5, std 0.25, NHWC.
DET_FORMAT = ImageFormat((128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         channels_first=False)
STRIDE = 8
#: The class heatmaps start near this probability everywhere (CenterNet's prior).
PRIOR = 0.05
#: Raw log-sizes are clamped here: a box at most e^4 cells across, so exp never overflows.
MAX_LOG_SIZE = 4.0
SEED = 4321


@keras.saving.register_keras_serializable(package="ml_bridge")
class GridBoxes(keras.layers.Layer):
    """Raw head outputs [N, rows, cols, 4 + C] -> the YOLOv8 layout [N, 4 + C, rows * cols]:
    centres from sigmoid offsets in their cells, sizes from exp of log-sizes (in cells),
    class probabilities from sigmoid."""

    def __init__(self, stride: int, **kwargs: Any) -> None:
        """``stride``: pixels per grid cell."""
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, raw: Any) -> Any:
        """See the class docstring."""
        rows, cols = raw.shape[1], raw.shape[2]
        gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        cells = keras.ops.convert_to_tensor(np.stack([gx, gy], -1).reshape(1, rows * cols, 2))
        flat = keras.ops.reshape(raw, (-1, rows * cols, raw.shape[3]))
        centre = (cells + keras.ops.sigmoid(flat[:, :, 0:2])) * self.stride
        size = keras.ops.exp(keras.ops.clip(flat[:, :, 2:4], -MAX_LOG_SIZE, MAX_LOG_SIZE)) \
            * self.stride
        out = keras.ops.concatenate([centre, size, keras.ops.sigmoid(flat[:, :, 4:])], axis=-1)
        return keras.ops.transpose(out, (0, 2, 1))

    def get_config(self) -> Dict[str, Any]:
        """The layer's config (for .keras files)."""
        return {**super().get_config(), "stride": self.stride}


def center_loss(grid: CenterGrid) -> Any:
    """CenterNet's loss on the served layout against ``grid``'s targets, as the torch
    built-in's: focal loss on the heatmaps, L1 on centres (in cells) and log-sizes at object
    centres, summed and divided by the number of objects in the batch."""
    c = grid.classes

    def loss(target: tf.Tensor, output: tf.Tensor) -> tf.Tensor:
        target = tf.cast(target, tf.float32)
        output = tf.cast(output, tf.float32)
        p = tf.clip_by_value(output[:, 4:4 + c], 1e-4, 1 - 1e-4)
        heat = target[:, 4:4 + c]
        pos = tf.cast(tf.equal(heat, 1.0), tf.float32)
        focal = -tf.reduce_sum(tf.math.log(p) * (1 - p) ** 2 * pos
                               + tf.math.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos))
        centres = target[:, grid.center_row:grid.center_row + 1]
        count = tf.maximum(tf.reduce_sum(centres), 1.0)
        offset = tf.abs(output[:, 0:2] - target[:, 0:2]) / grid.stride
        size = tf.abs(tf.math.log(output[:, 2:4]) - tf.math.log(tf.maximum(target[:, 2:4], 1.0)))
        return (focal + tf.reduce_sum((offset + size) * centres)) / count

    return loss


class Map50(keras.metrics.Metric):
    """``map50`` for Keras, the trainer's metric for every detector with a grid: each batch's
    outputs and targets go to a :class:`MapTally` (numpy, through ``tf.numpy_function``); the
    result pools the epoch's frames."""

    def __init__(self, grid: CenterGrid, name: str = MAP50, **kwargs: Any) -> None:
        """For a detector on ``grid``."""
        super().__init__(name=name, **kwargs)
        self.tally = MapTally(grid)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Optional[Any] = None) -> Any:
        """Collects one batch (``sample_weight`` is not supported and ignored)."""
        def add(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
            self.tally.add(pred, true)
            return np.zeros((), np.float32)

        return tf.numpy_function(add, [y_pred, y_true], tf.float32, stateful=True)

    def result(self) -> Any:
        """mAP@0.5 over the frames collected since the last reset."""
        def value() -> np.ndarray:
            return np.asarray(self.tally.result(), np.float32)

        return tf.numpy_function(value, [], tf.float32, stateful=True)

    def reset_state(self) -> None:
        """Forgets the collected frames (Keras calls it before every epoch and evaluation)."""
        self.tally.reset()


def _det_input(image: np.ndarray) -> List[np.ndarray]:
    return [DET_FORMAT.frame(image)[None]]


def shapes_det() -> ModelBundle:
    """The ``shapes_det`` detector: float32 [N, 128, 128, 3] -> [N, 7, 256], the YOLOv8
    layout (cx, cy, w, h in input pixels, then circle, square, triangle probabilities).

    Defaults (batch 16, Adam at 2e-3) train 15 epochs on ``shape_scenes`` in about a minute
    on a 2-core CPU.
    """
    grid = CenterGrid(DET_FORMAT.size, STRIDE, len(SCENE_LABELS))
    widths = (16, 32, 48, 64)
    image = keras.Input(DET_FORMAT.input_shape(), dtype="float32", name="image")
    x = conv_bn_relu(image, widths[0], "down1", SEED, stride=2)
    x = conv_bn_relu(x, widths[1], "down2", SEED + 1, stride=2)
    x = conv_bn_relu(x, widths[2], "down3", SEED + 2, stride=2)
    x = conv_bn_relu(x, widths[2], "enc3", SEED + 3)
    deep = conv_bn_relu(x, widths[3], "down4", SEED + 4, stride=2)
    deep = conv_bn_relu(deep, widths[3], "enc4", SEED + 5, dilation=2)
    lateral = keras.layers.Conv2D(widths[2], 1, name="lateral",
                                  kernel_initializer=keras.initializers.GlorotUniform(SEED + 6))
    up = keras.layers.UpSampling2D(2, name="up")(lateral(deep))
    x = conv_bn_relu(keras.layers.Add(name="join")([x, up]), widths[2], "merge", SEED + 7)
    bias = np.zeros(4 + grid.classes, np.float32)
    bias[2:4] = math.log(2.0)  # boxes start 2 cells wide
    bias[4:] = math.log(PRIOR / (1 - PRIOR))
    raw = keras.layers.Conv2D(4 + grid.classes, 1, name="head",
                              kernel_initializer=keras.initializers.GlorotUniform(SEED + 8),
                              bias_initializer=keras.initializers.Constant(bias))(x)
    detections = GridBoxes(STRIDE, name="detections")(raw)
    return ModelBundle(model=keras.Model(image, detections, name="shapes_det"),
                       labels=SCENE_LABELS, loss=center_loss(grid),
                       preprocess_image=_det_input, batch_size=16, learning_rate=2e-3,
                       outputs_probabilities=True, image_format=DET_FORMAT, box_grid=grid)
