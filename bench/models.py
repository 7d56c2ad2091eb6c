"""Factory models of the pipeline figures (``bench.models:shapes_seg_128`` as a node's model).

``shapes_seg_128`` is the built-in ``shapes_seg`` network (the same layers and seeded weights)
taking 128 x 128 frames: the size of a small real-time segmenter, so the figures weigh the
pipeline's work at camera size against a model of a realistic cost.
"""
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.synthetic import SHAPE_LABELS
from ml_bridge.core.vision import ImageFormat

#: The side of the segmenter's square input.
SEG_SIZE = 128


def shapes_seg_128() -> ModelBundle:
    """The torch ``shapes_seg`` U-Net at 128 x 128 (ImageNet mean and std, channels first)."""
    import torch

    from ml_bridge.backends.torch.builtins import SEG_FORMAT, ShapesSeg, seeded_init

    size = (SEG_SIZE, SEG_SIZE)

    class ShapesSeg128(ShapesSeg):
        """ShapesSeg with its 128 x 128 specs declared (the layers take any multiple of 8)."""

        input_spec = [TensorSpec("image", "float32", (-1, 3) + size)]
        output_spec = [TensorSpec("scores", "float32", (-1, len(SHAPE_LABELS)) + size)]

    with torch.device("cpu"):
        module = seeded_init(ShapesSeg128(len(SHAPE_LABELS)), seed=2)
    fmt = ImageFormat(size, mean=SEG_FORMAT.mean, std=SEG_FORMAT.std, channels_first=True)
    return ModelBundle(model=module, labels=list(SHAPE_LABELS), image_format=fmt)
