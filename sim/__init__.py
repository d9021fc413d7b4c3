"""The digital twin: a MuJoCo model of the plant that steps, renders and (live) serves.

Offscreen rendering needs an OpenGL backend chosen before MuJoCo is imported; we default to
EGL (Mesa) unless the caller chose one (``MUJOCO_GL=osmesa`` works too).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
