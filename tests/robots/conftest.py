"""ROS 2 tests of this folder talk on a domain of their own (from the pid), so parallel runs
on the machine never hear each other; subprocesses inherit it."""

from __future__ import annotations

import os

os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import warnings

# rclpy's type support imports lark, which imports the deprecated sre_parse once; let that
# first import happen here rather than turn into an error inside a test (warnings are errors).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import rosidl_generator_py  # noqa: F401
