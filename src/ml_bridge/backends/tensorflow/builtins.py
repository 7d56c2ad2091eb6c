"""The built-in Keras models, by name: ``digits_mlp`` and ``image_cnn``.

Each builder returns a :class:`~ml_bridge.core.model.ModelBundle` of a freshly initialised,
seeded model, so building twice gives the same weights.
"""
from typing import Callable, Dict, List

import keras
import numpy as np

from ml_bridge.core.model import ModelBundle
from ml_bridge.core.vision import digits_input, rgb_input

SEED = 1234

#: Input size of ``image_cnn`` (height, width).
IMAGE_SIZE = (224, 224)


def _dense(units: int, seed: int, name: str, activation: str = "linear") -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, name=name,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed))


def digits_mlp() -> ModelBundle:
    """8x8 digits classifier: float32 [N, 64] pixels in [0, 1] -> [N, 10] logits.

    Defaults (batch 32, Adam at 3e-3) reach about 0.95 held-out accuracy in 15 epochs on the
    built-in ``digits``.
    """
    pixels = keras.Input((64,), dtype="float32", name="pixels")
    hidden = _dense(64, SEED, "hidden", activation="relu")(pixels)
    scores = _dense(10, SEED + 1, "scores")(hidden)
    model = keras.Model(pixels, scores, name="digits_mlp")
    return ModelBundle(model=model, labels=[str(i) for i in range(10)],
                       preprocess_image=digits_input, batch_size=32, learning_rate=3e-3)


def _image_input(image: np.ndarray) -> List[np.ndarray]:
    return rgb_input(image, IMAGE_SIZE, channels_first=False)


def image_cnn() -> ModelBundle:
    """A small CNN with a realistic per-image cost: float32 [N, 224, 224, 3] -> [N, 10].

    Random (seeded) weights; it exists to measure image-topic throughput, not to be right.
    """
    image = keras.Input((*IMAGE_SIZE, 3), dtype="float32", name="image")
    # The torch built-in's layers: about 1 G multiply-adds per frame (ResNet-18: 1.8 G).
    x = image
    layers = ((32, 2, True), (64, 1, False), (128, 1, True), (256, 1, False), (256, 1, False))
    for i, (filters, strides, pool) in enumerate(layers):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", activation="relu",
                                kernel_initializer=keras.initializers.HeNormal(seed=SEED + i),
                                name=f"conv{i + 1}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    scores = _dense(10, SEED + 11, "scores")(x)
    model = keras.Model(image, scores, name="image_cnn")
    return ModelBundle(model=model, labels=[f"class_{i}" for i in range(10)],
                       preprocess_image=_image_input, batch_size=16, learning_rate=1e-3)


#: Built-in model name -> builder.
BUILTINS: Dict[str, Callable[[], ModelBundle]] = {
    "digits_mlp": digits_mlp,
    "image_cnn": image_cnn,
}
