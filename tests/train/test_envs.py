"""Every preset resets and steps with the declared shapes; pixels are real frames; specs match."""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from agent_runtime.spec import PolicySpec
from train.envs import build_spec, make_env, make_vector_env
from train.presets import OBS_MODES, PRESETS, get_preset

STEPS = 200


def _lit_fraction(frame: np.ndarray) -> float:
    """Fraction of pixels with any channel above 30 (of 255)."""
    return float((frame.max(axis=-1) > 30).mean())


@pytest.fixture(scope="module")
def specs() -> dict[tuple[str, str], PolicySpec]:
    return {(name, mode): build_spec(name, mode) for name in PRESETS for mode in OBS_MODES}


@pytest.mark.parametrize("mode", OBS_MODES)
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_resets_and_steps_with_declared_shapes(name, mode, specs):
    spec = specs[(name, mode)]
    env = make_env(name, mode)
    try:
        assert set(env.observation_space.spaces) == set(spec.observation_names)  # type: ignore[attr-defined]
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        spec.check_observation(obs)  # dtype, shape, no NaN or Inf
        for _ in range(STEPS):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            spec.check_observation(obs)
            assert np.isfinite(float(reward))
            if terminated or truncated:
                obs, _ = env.reset()
                spec.check_observation(obs)
    finally:
        env.close()


@pytest.mark.parametrize("name", list(PRESETS))
def test_pixels_are_real_frames_that_change(name):
    env = make_env(name, "pixels")
    try:
        first, _ = env.reset(seed=1)
        env.action_space.seed(1)
        for _ in range(10):
            obs, *_ = env.step(env.action_space.sample())
    finally:
        env.close()
    newest = obs["pixels"][..., -3:]
    # The pendulum model has no floor: its frames are a lit cart and pole on black (about 5% lit).
    assert _lit_fraction(newest) > 0.02, "frame is (nearly) black"
    assert newest.std() > 5, "frame is flat"
    assert not np.array_equal(newest, first["pixels"][..., -3:]), "frames do not change over time"
    # At reset the history holds copies of the first frame; after steps the oldest differs from newest.
    assert np.array_equal(first["pixels"][..., :3], first["pixels"][..., -3:])
    assert not np.array_equal(obs["pixels"][..., :3], newest)


def test_frame_history_is_oldest_first():
    env = make_env("inverted_pendulum", "pixels")
    try:
        obs0, _ = env.reset(seed=2)
        obs1, *_ = env.step(np.array([3.0], dtype=np.float32))
        obs2, *_ = env.step(np.array([3.0], dtype=np.float32))
    finally:
        env.close()
    # Each step shifts the stack by one frame: the newest frame becomes the middle one next step.
    assert np.array_equal(obs2["pixels"][..., 3:6], obs1["pixels"][..., 6:9])
    assert np.array_equal(obs2["pixels"][..., 0:3], obs1["pixels"][..., 3:6])
    assert np.array_equal(obs1["pixels"][..., 0:3], obs0["pixels"][..., 0:3])


def test_two_renderers_in_one_process_render_their_own_frames():
    # The pitfall in shared/FACTS.md: with gymnasium's viewer, the second env's GL context is current
    # and the first renders black or foreign frames. Each FrameRenderer makes its own context current.
    a = make_env("inverted_pendulum", "pixels")
    b = make_env("reacher", "pixels")
    try:
        obs_a, _ = a.reset(seed=0)
        obs_b, _ = b.reset(seed=0)
        obs_a, *_ = a.step(a.action_space.sample())
        frame_a = obs_a["pixels"][..., -3:]
        frame_b = obs_b["pixels"][..., -3:]
        assert frame_a.mean() > 1 and frame_b.mean() > 10
        # The pendulum scene has a black background; the reacher a grey floor: frames must not mix.
        assert frame_a.mean() < 60 < frame_b.mean()
        alone = make_env("inverted_pendulum", "pixels")
        try:
            ref, _ = alone.reset(seed=0)
        finally:
            alone.close()
        obs_a2, _ = a.reset(seed=0)
        assert np.array_equal(obs_a2["pixels"], ref["pixels"]), "same state, same frame, whatever else renders"
    finally:
        a.close()
        b.close()


def test_closing_an_old_env_leaves_a_newer_one_rendering():
    # Second pitfall in shared/FACTS.md: an old env's cleanup freeing a newer env's render buffers,
    # after which the newer env returns black frames very fast.
    old = make_env("reacher", "pixels")
    old.reset(seed=0)
    new = make_env("reacher", "pixels")
    try:
        new.reset(seed=0)
        old.close()
        del old
        gc.collect()
        frames = []
        for _ in range(5):
            obs, *_ = new.step(new.action_space.sample())
            frames.append(obs["pixels"][..., -3:])
        assert all(_lit_fraction(f) > 0.5 for f in frames)
        assert not np.array_equal(frames[0], frames[-1])
    finally:
        new.close()


def test_an_old_env_collected_without_closing_leaves_a_newer_one_rendering():
    # mujoco.Renderer's finaliser frees its GL objects in whatever context is current: an env that a
    # test (or user) drops without closing, collected after a newer env rendered, used to delete the
    # newer env's buffers (frames about 44% lit instead of all). Our renderer frees in its own context.
    old = make_env("reacher", "pixels")
    old.reset(seed=0)
    new = make_env("reacher", "pixels")
    try:
        new.reset(seed=0)
        del old
        gc.collect()
        frames = [new.step(new.action_space.sample())[0]["pixels"][..., -3:] for _ in range(3)]
        assert all(_lit_fraction(f) > 0.5 for f in frames)
    finally:
        new.close()


def test_a_renderer_freed_while_another_draws_gives_that_one_its_context_back():
    # The garbage collector may free an old renderer inside a newer one's render(), after the newer
    # one made its context current and before it draws. The old one must leave that context current.
    import mujoco

    from train.presets import get_preset
    from train.render import FrameRenderer

    preset = get_preset("reacher")
    env = make_env("reacher", "state")
    model = env.unwrapped.model  # type: ignore[attr-defined]
    env.close()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    old = FrameRenderer(model, 64, preset.camera, "fast")
    new = FrameRenderer(model, 64, preset.camera, "fast")
    try:
        reference = new.render(data)
        old.close()  # what a finaliser would do inside the next render
        inner = new._renderer  # draw as mujoco.Renderer.render does after make_current, without it
        assert inner is not None
        inner.update_scene(data, camera=new._camera)
        frame = np.empty_like(reference)
        mujoco.mjr_render(inner._rect, inner.scene, inner._mjr_context)
        mujoco.mjr_readPixels(frame, None, inner._rect, inner._mjr_context)
        assert np.array_equal(np.flipud(frame), reference)
    finally:
        old.close()
        new.close()


def test_proprio_is_the_robots_own_joints_and_withholds_the_pole():
    pixels = make_env("inverted_pendulum", "pixels")
    state = make_env("inverted_pendulum", "state")
    try:
        p, _ = pixels.reset(seed=3)
        s, _ = state.reset(seed=3)
        for action in (0.5, -1.0, 2.0):
            p, *_ = pixels.step(np.array([action], dtype=np.float32))
            s, *_ = state.step(np.array([action], dtype=np.float32))
            # state = [slider.pos, hinge.pos, slider.vel, hinge.vel]; proprio = [slider.pos, slider.vel]
            np.testing.assert_allclose(p["proprio"], s["state"][[0, 2]], rtol=1e-6)
    finally:
        pixels.close()
        state.close()
    names = [q.name for q in build_spec("inverted_pendulum").observation("proprio").quantities]
    assert names == ["slider.pos", "slider.vel"]


def test_reacher_target_is_withheld_from_proprio():
    spec = build_spec("reacher", "pixels")
    names = {q.name for q in spec.observation("proprio").quantities}
    assert names == {"joint0.pos", "joint1.pos", "joint0.vel", "joint1.vel"}
    state_names = {q.name for q in build_spec("reacher", "state").observation("state").quantities}
    assert {"target_x.pos", "fingertip_to_target.x"} <= state_names


def test_action_repeat_advances_simulated_time_by_the_control_period():
    spec = build_spec("walker2d", "state")
    assert spec.action_repeat == 4
    assert spec.control_period_s == pytest.approx(4 * 0.008)
    env = make_env("walker2d", "state")
    try:
        env.reset(seed=0)
        data = env.unwrapped.data  # type: ignore[attr-defined]
        t0 = data.time
        env.step(np.zeros(6, dtype=np.float32))
        assert data.time - t0 == pytest.approx(spec.control_period_s)
    finally:
        env.close()


def test_spec_reads_action_names_units_and_bounds_from_the_model():
    spec = build_spec("half_cheetah", "pixels")
    assert spec.action.names == ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
    assert spec.action.quantities[0].unit == "120 N·m"
    assert spec.action.low == (-1.0,) * 6 and spec.action.high == (1.0,) * 6
    assert spec.observation("pixels").shape == (84, 84, 9)
    assert spec.provenance.task_preset == "half_cheetah"
    pendulum = build_spec("inverted_pendulum", "state")
    assert pendulum.action.names == ("slide",) and pendulum.action.quantities[0].unit == "100 N"
    assert pendulum.action.low == (-3.0,)
    reacher = build_spec("reacher", "state")  # actuators without names take their joint's name
    assert reacher.action.names == ("joint0", "joint1")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task preset 'cartpole'; known presets: inverted_pendulum, reacher"):
        make_env("cartpole")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="observation mode 'rgb' is not one of pixels, state"):
        make_env("reacher", "rgb")  # type: ignore[arg-type]


def test_marker_scaling_refuses_geoms_with_contacts():
    preset = dataclasses.replace(get_preset("inverted_pendulum"), marker_scale=(("cpole", 2.0),))
    with pytest.raises(ValueError, match="geom 'cpole' takes part in contacts"):
        make_env(preset, "state")
    missing = dataclasses.replace(get_preset("inverted_pendulum"), marker_scale=(("nothing", 2.0),))
    with pytest.raises(ValueError, match="has no geom 'nothing'"):
        make_env(missing, "state")


def test_vector_env_in_processes_gives_batched_named_frames():
    envs = make_vector_env("inverted_pendulum", "pixels", num_envs=2)
    try:
        obs, _ = envs.reset(seed=10)  # env i gets seed 10 + i
        assert obs["pixels"].shape == (2, 84, 84, 9) and obs["pixels"].dtype == np.uint8
        assert obs["proprio"].shape == (2, 2) and obs["proprio"].dtype == np.float32
        for _ in range(5):
            obs, reward, *_ = envs.step(envs.action_space.sample())
        assert reward.shape == (2,)
        assert all(_lit_fraction(obs["pixels"][i, ..., -3:]) > 0.02 for i in range(2))
        assert not np.array_equal(obs["proprio"][0], obs["proprio"][1])  # different seeds, own states
    finally:
        envs.close()


def _frames_after_reset(env: Any, steps: int) -> np.ndarray:
    """The newest frame after reset(seed=0) and after each of ``steps`` zero actions."""
    zero = np.zeros(env.action_space.shape, np.float32)
    frames = [env.reset(seed=0)[0]["pixels"][..., -3:]]
    frames += [env.step(zero)[0]["pixels"][..., -3:] for _ in range(steps)]
    return np.stack(frames)


def test_an_env_drawn_on_another_thread_closes_here_and_leaves_this_one_rendering():
    # The garbage collector runs finalisers on whichever thread it happens on: an env drawn on a
    # worker thread may be freed on the main thread, or while its context is current on a live thread.
    # Freeing its render context here would delete *our* framebuffers by name: frames turn to garbage,
    # lit or black, so they are compared with a reference env's frames of the same states.
    import threading

    reference = make_env("reacher", "pixels")
    try:
        expected = _frames_after_reset(reference, 3)
    finally:
        reference.close()
    here = make_env("reacher", "pixels")
    envs: dict[str, object] = {}
    drawn, release = threading.Event(), threading.Event()

    def draw_and_hold() -> None:
        env = make_env("reacher", "pixels")
        env.reset(seed=0)
        envs["env"] = env
        drawn.set()
        release.wait(60)  # its context stays current on this live thread until released

    worker = threading.Thread(target=draw_and_hold)
    worker.start()
    try:
        assert drawn.wait(60)
        here.reset(seed=0)  # our context is current on this thread
        other = envs.pop("env")
        other.close()  # type: ignore[attr-defined]
        del other
        gc.collect()
        frames = _frames_after_reset(here, 3)
        assert np.array_equal(frames, expected), "frames changed after another thread's env was closed here"
    finally:
        release.set()
        worker.join(60)
        here.close()


def test_an_env_left_open_at_exit_is_freed_quietly():
    # mujoco terminates the EGL display at exit; a renderer freed after that printed
    # "Exception ignored ... EGLError". Ours are closed first.
    code = "import train\nfrom train.envs import make_env\nenv = make_env('reacher', 'pixels'); env.reset(seed=0)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Exception ignored" not in done.stderr and "EGLError" not in done.stderr, done.stderr[-2000:]


def test_importing_mujoco_first_without_egl_gives_a_clear_error():
    code = "import mujoco\nfrom train.envs import make_env\nmake_env('reacher', 'pixels')\n"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    assert "set MUJOCO_GL=egl before mujoco is first imported" in done.stderr


def test_pixel_env_with_state_also_gives_the_state_env_s_vector():
    import numpy as np

    from train.envs import make_env

    pixels, state = make_env("inverted_pendulum", "pixels", with_state=True), make_env("inverted_pendulum", "state")
    try:
        a, _ = pixels.reset(seed=4)
        b, _ = state.reset(seed=4)
        assert set(a) == {"pixels", "proprio", "state"} and a["state"].dtype == np.float32
        np.testing.assert_array_equal(a["state"], b["state"])
        a, *_ = pixels.step(np.array([0.7], np.float32))
        b, *_ = state.step(np.array([0.7], np.float32))
        np.testing.assert_array_equal(a["state"], b["state"])
        assert pixels.observation_space["state"].shape == (4,)  # type: ignore[index]
    finally:
        pixels.close()
        state.close()


def test_importing_timm_after_rendering_does_not_crash_the_process():
    # With PyPI's CUDA torch, a first import of triton after an EGL context existed was a segfault.
    import subprocess
    import sys

    code = (
        "import train\n"
        "from train.envs import make_env\n"
        "env = make_env('inverted_pendulum', 'pixels'); env.reset(seed=0)\n"
        "import timm\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_tracking_camera_s_lookat_is_an_offset_from_the_body_s_centre_of_mass():
    # MuJoCo's own tracking camera overwrites lookat; the preset's offset must still apply.
    import mujoco

    from train.render import FrameRenderer
    from train.task_preset import CameraConfig

    xml = """<mujoco><worldbody><light pos="0 0 4"/><geom type="plane" size="5 5 .1" rgba=".7 .7 .7 1"/>
      <body name="ball" pos="0.3 0.2 1"><freejoint/><geom size=".2" rgba="1 0 0 1"/>
      <body pos="0 0 .4"><geom size=".1" rgba="0 0 1 1"/></body></body></worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    for _ in range(40):  # it falls: the centre of mass moves
        mujoco.mj_step(model, data)
    offset = (0.0, 0.0, 0.5)
    tracked = CameraConfig(distance=3.0, elevation_deg=-20.0, azimuth_deg=90.0, lookat=offset, track_body="ball")
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "ball")
    x, y, z = (float(v) for v in data.subtree_com[body] + np.array(offset))
    where = (x, y, z)
    fixed = CameraConfig(distance=3.0, elevation_deg=-20.0, azimuth_deg=90.0, lookat=where)
    plain = dataclasses.replace(tracked, lookat=(0.0, 0.0, 0.0))
    renderers = [FrameRenderer(model, 64, c, "fast") for c in (tracked, fixed, plain)]
    try:
        with_offset, expected, without = (r.render(data) for r in renderers)
    finally:
        for r in renderers:
            r.close()
    assert np.array_equal(with_offset, expected)
    assert not np.array_equal(with_offset, without)


def test_a_frame_size_the_gl_driver_refuses_is_named_as_such(monkeypatch):
    # Drivers cap the offscreen framebuffer (16384 refused here, 8192 made): the error names the size, not MUJOCO_GL.
    import mujoco

    from train import render
    from train.render import FrameRenderer

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise mujoco.FatalError("Offscreen framebuffer is not complete, error 0x8cd6")

    monkeypatch.setattr(render, "_OwnContextRenderer", refuse)
    preset = get_preset("inverted_pendulum")
    env = make_env("inverted_pendulum", "state")
    model = env.unwrapped.model  # type: ignore[attr-defined]
    env.close()
    with pytest.raises(RuntimeError, match=r"could not make a 20000x20000 offscreen framebuffer .* smaller image_size"):
        FrameRenderer(model, 20000, preset.camera, "fast")
