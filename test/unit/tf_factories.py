"""Model factories and files for the TensorFlow backend tests (``tf_factories:...``)."""
import os
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from ml_bridge.core.model import ModelBundle


def small_functional(n_in: int = 4) -> keras.Model:
    """float32 [N, n_in] -> [N, 3] regression model, seeded."""
    x = keras.Input((n_in,), name="features")
    h = keras.layers.Dense(8, activation="tanh",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    y = keras.layers.Dense(3, name="values",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=2))(h)
    return keras.Model(x, y)


def five_features() -> keras.Model:
    """Like small_functional but [N, 5]: same layers, the first kernel's shape differs."""
    return small_functional(5)


def small_classifier_bundle() -> ModelBundle:
    """A ModelBundle: 3-class classifier with labels and its own defaults."""
    return ModelBundle(model=small_functional(), labels=["a", "b", "c"], batch_size=8,
                       learning_rate=0.01)


class Doubler(keras.Model):
    """A subclassed model with no get_config: clone_model cannot copy it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(width)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.dense(x) * 2.0


def subclassed() -> keras.Model:
    """A built subclassed model: [N, 5] -> [N, 2]."""
    model = Doubler(2)
    model(np.zeros((1, 5), np.float32))  # creates the variables and records the input shape
    return model


def not_a_model() -> str:
    """A factory that returns something else."""
    return "nope"


def write_frozen_graph(directory: str) -> Tuple[str, str, str, np.ndarray, np.ndarray]:
    """Freezes a small tf.function (x @ w + b, softmax) into ``directory/frozen.pb``.

    Returns:
        (path, input tensor name, output tensor name, sample input, its expected output).
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    b = tf.Variable(rng.normal(size=(4,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def scores(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.matmul(x, w) + b, name="probs")

    frozen = convert_variables_to_constants_v2(scores.get_concrete_function())
    tf.io.write_graph(frozen.graph.as_graph_def(), directory, "frozen.pb", as_text=False)
    sample = rng.normal(size=(5, 6)).astype(np.float32)
    expected = scores(tf.constant(sample)).numpy()
    return (os.path.join(directory, "frozen.pb"), frozen.inputs[0].name,
            frozen.outputs[0].name, sample, expected)
