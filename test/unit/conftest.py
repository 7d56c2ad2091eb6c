"""Unit tests run without a ROS master. Quiet TensorFlow's start-up chatter."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the TensorFlow backend sets it for the node: tests that import TensorFlow before the
# backend would otherwise train with oneDNN off on CPUs where TensorFlow leaves it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
try:  # the catkin devel space (source build/env.sh) serves src/ml_bridge and the messages
    import ml_bridge.msg  # noqa: F401
except ImportError:  # plain checkout: the sources alone, for tests that need no messages
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from typing import Iterator

import pytest

from ml_bridge.core.datasets import Dataset, digits


@pytest.fixture(scope="module")
def heldout() -> Dataset:
    """The held-out digits [1500:1797]."""
    return digits(heldout=True)


@pytest.fixture(scope="module")
def one_intra_op_thread() -> Iterator[None]:
    """Tiny matrices: torch's thread pool only adds spin-waits (40x slower on a busy box).

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_intra_op_thread")``.
    """
    import torch  # only the modules that opt in pay for torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
