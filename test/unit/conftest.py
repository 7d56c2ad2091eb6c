"""Unit tests run without a ROS master. Quiet TensorFlow's start-up chatter."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
