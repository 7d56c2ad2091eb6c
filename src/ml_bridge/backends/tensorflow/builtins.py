"""The built-in Keras models, by name: ``digits_mlp``, ``image_cnn`` and the vision models
``shapes_seg``, ``motion_clip`` and ``shapes_crop``.

Each builder returns a :class:`~ml_bridge.core.model.ModelBundle` of a freshly initialised,
seeded model, so building twice gives the same weights.
"""
from typing import Callable, List

import keras
import numpy as np

from ml_bridge.backends.tensorflow.averaged import averaging_adam
from ml_bridge.core.errors import BackendError
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.registry import Registry
from ml_bridge.core.synthetic import SHAPE_LABELS
from ml_bridge.core.synthetic_crops import CROP_LABELS
from ml_bridge.core.synthetic_motion import CLIP_LENGTH, MOTION_LABELS
from ml_bridge.core.vision import ImageFormat, digits_input, rgb_input

SEED = 1234

#: Input size of ``image_cnn`` (height, width).
IMAGE_SIZE = (224, 224)


#: The built-in models of this backend, by the name ``model:=`` takes.
BUILTINS: "Registry[Callable[[], ModelBundle]]" = Registry("built-in model", BackendError)


def _dense(units: int, seed: int, name: str, activation: str = "linear") -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, name=name,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed))


@BUILTINS.register("digits_mlp")
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


@BUILTINS.register("image_cnn")
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


# --- motion_clip and shapes_crop: a 3-D CNN over clips, a 2-D CNN over crops -------------

#: As the torch built-ins take them, channels last: 32 x 32 frames, pixel / 255 centred on
#: 0.5 with std 0.25.
CLIP_FORMAT = ImageFormat((32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                          channels_first=False, clip_length=CLIP_LENGTH)
CROP_FORMAT = ImageFormat((32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                          channels_first=False)


def _torch_like(seed: int) -> keras.initializers.Initializer:
    # torch's default kernel init (uniform, variance 1/(3 fan_in)): smaller than He's, and
    # with it shapes_crop generalises clearly better from 1800 crops (0.98 against 0.90).
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)


@BUILTINS.register("motion_clip")
def motion_clip() -> ModelBundle:
    """Clip classifier: float32 [N, 16, 32, 32, 3] -> [N, 4] logits of left, right, up, down.

    Three 3x3x3 convolutions and global average pooling, as the torch built-in. Defaults
    (batch 16, Adam at 2e-3) reach about 1.0 held-out accuracy on ``motion`` in 10 epochs.
    """
    clip = keras.Input(CLIP_FORMAT.input_shape(), dtype="float32", name="clip")
    x = clip
    for i, (filters, stride, pool) in enumerate(((8, (1, 2, 2), True), (16, 1, True),
                                                 (32, 1, False))):
        x = keras.layers.Conv3D(filters, 3, strides=stride, padding="same", activation="relu",
                                kernel_initializer=_torch_like(SEED + 20 + i),
                                name=f"conv{i + 1}")(x)
        if pool:
            x = keras.layers.MaxPooling3D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling3D(name="gap")(x)
    scores = _dense(len(MOTION_LABELS), SEED + 29, "scores")(x)
    return ModelBundle(model=keras.Model(clip, scores, name="motion_clip"), labels=MOTION_LABELS,
                       batch_size=16, learning_rate=2e-3, image_format=CLIP_FORMAT)


def _crop_input(image: np.ndarray) -> List[np.ndarray]:
    return [CROP_FORMAT.frame(image)[None]]


@BUILTINS.register("shapes_crop")
def shapes_crop() -> ModelBundle:
    """Crop classifier: float32 [N, 32, 32, 3] -> [N, 3] logits of circle, square, triangle.

    Three conv/pool stages and a small dense head, as the torch built-in. Defaults (batch 32,
    Adam at 2e-3) reach about 0.98 held-out accuracy on ``shape_crops`` in 10 epochs.
    """
    image = keras.Input(CROP_FORMAT.input_shape(), dtype="float32", name="image")
    x = image
    for i, filters in enumerate((16, 32, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                kernel_initializer=_torch_like(SEED + 30 + i),
                                name=f"conv{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", kernel_initializer=_torch_like(SEED + 35),
                           name="hidden")(x)
    scores = _dense(len(CROP_LABELS), SEED + 39, "scores")(x)
    return ModelBundle(model=keras.Model(image, scores, name="shapes_crop"), labels=CROP_LABELS,
                       preprocess_image=_crop_input, batch_size=32, learning_rate=2e-3,
                       image_format=CROP_FORMAT)


# --- shapes_seg: per-pixel classes of the synthetic ``shapes`` scenes --------------------

#: ImageNet's statistics, channels last (the torch built-in's format, NHWC).
SEG_FORMAT = ImageFormat((64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         channels_first=False)


def conv_bn_relu(x: keras.KerasTensor, filters: int, name: str, seed: int,
                 stride: int = 1, dilation: int = 1) -> keras.KerasTensor:
    """3x3 convolution, BatchNorm and ReLU as torch builds them: the block of the image
    built-ins (shapes_seg here, shapes_det in :mod:`.detector`)."""
    # torch's default kernel init (uniform, variance 1/(3 fan_in)): with He's the held-out
    # IoU after 10 epochs was 0.85 against 0.90.
    init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)
    x = keras.layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same",
                            use_bias=False, kernel_initializer=init, name=name)(x)
    # torch's BatchNorm defaults (Keras's momentum 0.99 lags behind in a 600-step run,
    # leaving the eval-mode statistics stale).
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _seg_input(image: np.ndarray) -> List[np.ndarray]:
    return [SEG_FORMAT.frame(image)[None]]


@BUILTINS.register("shapes_seg")
def shapes_seg() -> ModelBundle:
    """Segmenter: float32 [N, 64, 64, 3] (ImageNet-normalised RGB) -> [N, 64, 64, 4] logits of
    background, circle, square, triangle per pixel.

    The torch built-in's small U-Net: stages at 1/2, 1/4 and 1/8 of the frame, a decoder
    joining the encoder's features of the same size, scores at 1/2 resized bilinearly; its
    deepest stage is dilated. Defaults (batch 16, Adam at 1.5e-3) train 10 epochs on ``shapes``
    in about two minutes on a 2-core CPU.
    """
    widths = (16, 32, 64)
    image = keras.Input(SEG_FORMAT.input_shape(), dtype="float32", name="image")
    x = image
    skips = []
    seed = SEED + 40
    for i, width in enumerate(widths):
        x = conv_bn_relu(x, width, f"down{i + 1}", seed, stride=2)
        # The deepest stage is dilated so that its features span the whole frame, as the
        # torch built-in's.
        dilation = 2 if i == len(widths) - 1 else 1
        for j in range(2 if i else 0):  # the first stage only halves the frame
            seed += 1
            x = conv_bn_relu(x, width, f"enc{i + 1}_{j + 1}", seed, dilation=dilation)
        skips.append(x)
        seed += 1
    skips.pop()
    for i, width in reversed(list(enumerate(widths[:-1]))):
        x = keras.layers.UpSampling2D(2, name=f"up{i + 1}")(x)
        x = keras.layers.Concatenate(name=f"skip{i + 1}")([x, skips.pop()])
        x = conv_bn_relu(x, width, f"dec{i + 1}", seed)
        seed += 1
    x = keras.layers.Conv2D(len(SHAPE_LABELS), 1, name="head",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    scores = keras.layers.UpSampling2D(2, interpolation="bilinear", name="scores")(x)
    return ModelBundle(model=keras.Model(image, scores, name="shapes_seg"), labels=SHAPE_LABELS,
                       # The torch built-in's batch; at its learning rate (3e-3) Keras's
                       # training stalls on the varied scenes, so half of it.
                       preprocess_image=_seg_input, batch_size=16, learning_rate=1.5e-3,
                       optimizer=averaging_adam, image_format=SEG_FORMAT)


#: Built-in model name -> builder.

# The detector has its own module, imported when it is first asked for.
BUILTINS.register("shapes_det", "ml_bridge.backends.tensorflow.detector:shapes_det", lazy=True)
