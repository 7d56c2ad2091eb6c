#!/usr/bin/env python3
"""A node that cannot load its model exits 1 with one line naming the cause, no traceback."""
import subprocess
import sys
import unittest
from typing import List, Tuple

import rospy

import rostest


def start(params: List[str]) -> Tuple[int, str]:
    proc = subprocess.run(["rosrun", "ml_bridge", "server", "__name:=bad_node"] + params,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
    return proc.returncode, proc.stdout.decode(errors="replace")


class StartupTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("startup_test")

    def check(self, params: List[str], *words: str) -> None:
        code, out = start(params)
        self.assertEqual(code, 1, out)
        self.assertIn("ml_bridge cannot start", out)
        for w in words:
            self.assertIn(w, out)
        self.assertNotIn("Traceback", out)

    def test_unknown_backend_lists_the_valid_ones(self) -> None:
        self.check(["_backend:=caffe"], "unknown backend 'caffe'", "tensorflow", "torch")

    def test_missing_model_file_is_named(self) -> None:
        self.check(["_backend:=torch", "_model:=/nonexistent/model.pt"], "/nonexistent/model.pt")

    def test_unknown_builtin_lists_the_builtins(self) -> None:
        self.check(["_backend:=torch", "_model:=no_such_model"], "no_such_model", "digits_mlp")


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "startup_test", StartupTest, sys.argv)
