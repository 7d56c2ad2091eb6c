"""Python package set-up for catkin (catkin_python_setup)."""
from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import setup

setup(**generate_distutils_setup(packages=["ml_bridge", "ml_bridge.core", "ml_bridge.backends",
                                           "ml_bridge.backends.torch",
                                           "ml_bridge.backends.tensorflow", "ml_bridge.ros"],
                                 package_dir={"": "src"}))
