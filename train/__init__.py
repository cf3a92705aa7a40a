"""Training stage: task presets and environments, replay, the actor-critic, runs and checkpoints.

Importing this package sets ``MUJOCO_GL=egl`` unless the user set it: headless rendering on CPU
machines works through EGL (osmesa and glfw fail there), and MuJoCo reads the variable once, when it
is first imported, so it must be set before any module of this package imports mujoco.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
