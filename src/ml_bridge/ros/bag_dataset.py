"""Datasets from rosbag files holding ml_bridge/Sample messages (``.bag`` under ~data_root)."""
from typing import List

import numpy as np

from ml_bridge.core.box_targets import stack_targets
from ml_bridge.core.datasets import FILE_LOADERS, Dataset
from ml_bridge.core.errors import DatasetError
from ml_bridge.ros.conversions import ConversionError, tensor_to_array

SAMPLE_TYPE = "ml_bridge/Sample"


def load_bag(path: str) -> Dataset:
    """Every ml_bridge/Sample message in the bag (any topic), stacked in recording order."""
    import rosbag

    inputs: List[List[np.ndarray]] = []
    targets: List[List[np.ndarray]] = []
    try:
        with rosbag.Bag(path, "r") as bag:
            topics = [t for t, info in bag.get_type_and_topic_info().topics.items()
                      if info.msg_type == SAMPLE_TYPE]
            for _topic, msg, _t in bag.read_messages(topics=topics):
                inputs.append([tensor_to_array(t) for t in msg.inputs])
                targets.append([tensor_to_array(t) for t in msg.targets])
    except ConversionError as err:
        raise DatasetError(f"{path}: a sample could not be read: {err}") from err
    except (rosbag.ROSBagException, OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path} as a rosbag: {err}") from err
    if not inputs:
        raise DatasetError(f"{path} holds no {SAMPLE_TYPE} messages")
    try:
        return Dataset(path, [np.stack(col) for col in zip(*inputs)],
                       [stack_targets(col) for col in zip(*targets)])
    except ValueError as err:
        raise DatasetError(f"{path}: samples differ in shape: {err}") from err


def register_loader() -> None:
    """Makes ``.bag`` files loadable as datasets (the node calls it; a second call does nothing)."""
    if ".bag" not in FILE_LOADERS:
        FILE_LOADERS.register(".bag", load_bag)
