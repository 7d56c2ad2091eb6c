"""Unit tests run without a ROS master. Quiet TensorFlow's start-up chatter."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:  # the catkin devel space (source build/env.sh) serves src/ml_bridge and the messages
    import ml_bridge.msg  # noqa: F401
except ImportError:  # plain checkout: the sources alone, for tests that need no messages
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
