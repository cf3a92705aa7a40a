"""The serving bench's fuzz messages: each malformation carries the error code the server must give."""

from __future__ import annotations

import dataclasses

import numpy as np

from agent_runtime.protocol import Code
from bench.serve_workers import _malformed
from tests.agent_runtime.conftest import pixel_spec


def test_a_spec_of_camera_frames_alone_gets_every_kind_of_malformed_message():
    spec = pixel_spec()
    spec = dataclasses.replace(spec, observations=spec.observations[:1])  # no float entry to spoil
    obs = {"pixels": np.zeros(spec.observations[0].shape, np.uint8)}
    rng = np.random.default_rng(0)
    codes = {_malformed(rng, spec, obs, 1 << 20)[1] for _ in range(500)}
    assert Code.NON_FINITE not in codes and {Code.BAD_SHAPE, Code.BAD_DTYPE, Code.MALFORMED} <= codes
