"""Python package set-up for catkin (catkin_python_setup).

The package list is found, never written by hand: a hand-written list once left out
``ml_bridge.pipelines`` and the node could not start from an install space.
"""
from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import find_packages, setup

setup(**generate_distutils_setup(packages=find_packages(where="src"), package_dir={"": "src"}))
