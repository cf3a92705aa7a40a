"""Policies and observations for the serving benchmarks: exported students, or stand-ins of their shape.

When no exported student is given, the benchmark builds an ONNX stand-in with random weights and the
architecture of ``models.student``: the conv student (four 3x3 convolutions with strides 2, 2, 2, 1,
32 channels, a 64-d trunk with LayerNorm and tanh, proprio joined after it, an MLP of 256, 256, tanh
and scaling to the bounds), or the MLP student (256, 256). Inputs, output and metadata follow the
export contract (``agent_runtime.spec``), so the server cannot tell a stand-in from an export.
Observations are recorded from the task's environment with random actions, so the pixels are real
rendered frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agent_runtime.spec import ONNX_SPEC_KEY, PolicySpec
from train.envs import build_spec, make_env

OPSET = 17  # LayerNormalization


class _Graph:
    """Collects nodes and random initializers (He-scaled, seeded) for a small feed-forward graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value: np.ndarray) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        self._n += 1
        out = f"t{self._n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def weight(self, *shape: int, fan_in: int) -> str:
        return self.const(self.rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))

    def linear(self, x: str, n_in: int, n_out: int) -> str:
        return self.op(
            "Add", [self.op("MatMul", [x, self.weight(n_in, n_out, fan_in=n_in)]), self.const(np.zeros(n_out))]
        )

    def mlp(self, x: str, n_in: int, hidden: tuple[int, ...], n_out: int) -> str:
        for width in hidden:
            x, n_in = self.op("Relu", [self.linear(x, n_in, width)]), width
        return self.linear(x, n_in, n_out)

    def squash_to_bounds(self, x: str, spec: PolicySpec) -> str:
        low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)
        unit = self.op(
            "Mul", [self.op("Add", [self.op("Tanh", [x]), self.const(np.ones(1))]), self.const(np.full(1, 0.5))]
        )
        return self.op("Add", [self.op("Mul", [unit, self.const(high - low)]), self.const(low)])


def build_student(spec: PolicySpec, path: Path, seed: int = 0) -> Path:
    """Write a stand-in student for ``spec`` (conv for pixels + proprio, MLP for state) to ``path``."""
    g = _Graph(seed)
    dim = spec.action.dim
    inputs = []
    if spec.observation_names == ("state",):
        (state,) = spec.observations
        inputs.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", *state.shape]))
        pre = g.mlp("state", state.shape[0], (256, 256), dim)
    else:
        pixels, proprio = spec.observation("pixels"), spec.observation("proprio")
        h, w, c = pixels.shape
        inputs.append(helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", h, w, c]))
        inputs.append(helper.make_tensor_value_info("proprio", TensorProto.FLOAT, ["batch", proprio.shape[0]]))
        x = g.op("Cast", ["pixels"], to=TensorProto.FLOAT)
        x = g.op("Sub", [g.op("Mul", [x, g.const(np.full(1, 1 / 255))]), g.const(np.full(1, 0.5))])
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
        channels, size = c, (h, w)
        for stride in (2, 2, 2, 1):
            kernel = g.weight(32, channels, 3, 3, fan_in=channels * 9)
            x = g.op("Relu", [g.op("Conv", [x, kernel, g.const(np.zeros(32))], strides=[stride, stride])])
            channels, size = 32, ((size[0] - 3) // stride + 1, (size[1] - 3) // stride + 1)
        flat = channels * size[0] * size[1]
        x = g.op("Flatten", [x], axis=1)
        x = g.op("LayerNormalization", [g.linear(x, flat, 64), g.const(np.ones(64)), g.const(np.zeros(64))], axis=-1)
        x = g.op("Concat", [g.op("Tanh", [x]), "proprio"], axis=1)
        pre = g.mlp(x, 64 + proprio.shape[0], (256, 256), dim)
    action = g.squash_to_bounds(pre, spec)
    g.nodes.append(helper.make_node("Identity", [action], ["action"]))
    output = helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", dim])
    model = helper.make_model(
        helper.make_graph(g.nodes, "student", inputs, [output], g.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = 8
    stand_in = spec.with_provenance(policy="bench stand-in student (random weights)")
    helper.set_model_props(model, {ONNX_SPEC_KEY: stand_in.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def record_observations(preset: str, mode: str, steps: int, path: Path, seed: int = 0) -> Path:
    """Step the preset's environment with random actions and save ``steps`` observations to ``path`` (npz).

    Refuses black or frozen camera frames (shared/FACTS.md: a broken GL context returns them very fast).
    """
    env = make_env(preset, mode)  # type: ignore[arg-type]
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        recorded: dict[str, list[np.ndarray]] = {k: [] for k in obs}
        for _ in range(steps):
            for k, v in obs.items():
                recorded[k].append(v)
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    arrays = {k: np.stack(v) for k, v in recorded.items()}
    if "pixels" in arrays:
        frames = arrays["pixels"][..., -3:]
        if (frames.max(axis=-1) > 30).mean() < 0.02 or np.array_equal(frames[0], frames[-1]):
            raise RuntimeError(f"{preset}: recorded frames are black or frozen")
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return path


def spec_for(preset: str, mode: str) -> PolicySpec:
    """The preset's spec in this mode (what an exported student of it carries)."""
    return build_spec(preset, mode)  # type: ignore[arg-type]
