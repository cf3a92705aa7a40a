"""Task presets from TOML files: round trip, derived state names, every validation error, a user's env."""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from train.envs import build_spec, make_env
from train.preset_file import PresetFileError, check_same_task, load_preset_file, preset_to_toml, save_preset_copy
from train.presets import get_preset

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "presets" / "inverted_double_pendulum.toml"
CAMERA = """
[camera]
distance = 2.5
elevation_deg = 0.0
azimuth_deg = 90.0
lookat = [0.0, 0.0, 0.2]
"""
# The built-in inverted_pendulum, written as a file (its state names left to be derived).
PENDULUM = 'env_id = "InvertedPendulum-v5"\nproprio = ["slider.pos", "slider.vel"]\n' + CAMERA


def _write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_example_file_round_trips_through_its_canonical_text(tmp_path):
    preset = load_preset_file(EXAMPLE)
    assert preset.name == "inverted_double_pendulum" and preset.env_id == "InvertedDoublePendulum-v5"
    assert len(preset.state_quantities) == 9 and preset.failure_on_termination == "the pendulum fell"
    copy = _write(tmp_path, preset_to_toml(preset), "copy.toml")
    again = load_preset_file(copy)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(preset, source=None)
    assert again.sha256 == preset.sha256 and len(preset.sha256 or "") == 64
    assert preset_to_toml(again) == preset_to_toml(preset)


def test_a_dm_control_task_file_round_trips_with_its_unitless_state_names(tmp_path):
    # dm_control's state entries get empty units; a run's preset.toml copy must read back (resume, distill).
    text = 'env_id = "dm_control/cartpole-swingup-v0"\naction_repeat = 2\n[camera]\nmodel_camera = 0\n'
    path = _write(tmp_path, text)
    preset = load_preset_file(path)
    assert preset.state_quantities and all(unit == "" for _, unit in preset.state_quantities)
    again = load_preset_file(_write(tmp_path, preset_to_toml(preset), "copy.toml"))
    assert dataclasses.replace(again, source=None) == dataclasses.replace(preset, source=None)
    assert again.sha256 == preset.sha256


def test_state_names_are_derived_from_the_model_and_match_the_built_in_preset(tmp_path):
    preset = get_preset(str(_write(tmp_path, PENDULUM)))
    built_in = get_preset("inverted_pendulum")
    assert preset.state_quantities == built_in.state_quantities  # (slider.pos m, hinge.pos rad, ...)
    for mode in ("pixels", "state"):
        ours, theirs = build_spec(preset, mode), build_spec(built_in, mode)
        assert not ours.differences(theirs), mode
        assert ours.provenance.task_preset == "task" and ours.provenance.task_preset_sha256 == preset.sha256
        assert theirs.provenance.task_preset_sha256 is None
        assert "task_preset_sha256" not in theirs.to_dict()["provenance"]  # built-in specs read as before
        assert type(ours).from_json(ours.to_json()) == ours


def test_a_free_joint_model_gets_position_quaternion_and_velocity_names(tmp_path):
    text = 'env_id = "Ant-v5"\nenv_kwargs = { exclude_current_positions_from_observation = false, ' \
           'include_cfrc_ext_in_observation = false }\n' + CAMERA  # fmt: skip
    preset = get_preset(str(_write(tmp_path, text)))
    names = [n for n, _ in preset.state_quantities]
    assert names[:7] == ["root.x", "root.y", "root.z", "root.qw", "root.qx", "root.qy", "root.qz"]
    assert "root.wz" in names and dict(preset.state_quantities)["root.vx"] == "m/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env_id = \n", "not valid TOML"),
        (CAMERA, "missing field 'env_id'"),
        ('env_id = "InvertedPendulum-v5"\n', "missing field 'camera'"),
        (PENDULUM + "\ncolour = 1\n", "unknown field(s) colour"),
        (PENDULUM.replace("lookat", "look_at"), "camera: unknown field(s) look_at"),
        (PENDULUM.replace("distance = 2.5", 'distance = "far"'), "distance must be a finite number"),
        (PENDULUM.replace("distance = 2.5", "distance = -1.0"), "camera distance is -1.0"),
        (PENDULUM.replace("slider.pos", "slidr.pos"), "no joint 'slidr'; its joints are slider, hinge"),
        (PENDULUM.replace("slider.pos", "slider.angle"), 'must be "<joint>.pos" or "<joint>.vel"'),
        (PENDULUM + 'track_body = "cartt"\n', "no body 'cartt'; its bodies are world, cart, pole"),
        (PENDULUM + "[marker_scale]\ntip = 2.0\n", "no geom 'tip'; its named geoms are"),
        (PENDULUM + "[marker_scale]\ncpole = 0.0\n", "marker_scale.cpole must be a positive number"),
        ('render_quality = "ultra"\n' + PENDULUM, "render_quality is 'ultra'; use one of fast, shadows, default"),
        ("image_size = 8\n" + PENDULUM, "image_size is 8; use at least 16"),
        ('state_quantities = [["x", "m"]]\n' + PENDULUM, "names 1 values, but InvertedPendulum-v5's state"),
        (PENDULUM.replace("InvertedPendulum-v5", "InvertedDoublePendulum-v5"), "state_quantities: "),
        (PENDULUM.replace("InvertedPendulum-v5", "NoSuchEnv-v0"), "gymnasium could not make 'NoSuchEnv-v0'"),
        ('entry_point = "no_such_module:Env"\n' + PENDULUM.replace("InvertedPendulum-v5", "Mine-v0"),
         "entry point 'no_such_module:Env' could not make 'Mine-v0'"),
        ('env_kwargs = { xml_file = "missing.xml" }\n' + PENDULUM, "missing.xml"),
        ('entry_point = "my_envs.MyEnv"\n' + PENDULUM.replace("InvertedPendulum-v5", "Mine-v0"),
         "entry_point is 'my_envs.MyEnv'; write it as \"package.module:EnvClass\""),
        (PENDULUM.replace('"slider.vel"', '"slider.pos"'), "proprio reads joint 'slider''s position twice"),
        ('name = "../elsewhere"\n' + PENDULUM, "preset name '../elsewhere' must be 1 to 64 letters, digits"),
        ('name = "reacher"\n' + PENDULUM, "name 'reacher' (set in the file, or else its file name) is a built-in "
         "preset's; set name ="),
        (PENDULUM + "model_camera = 0\n", "model_camera stands alone (the model's camera sets its own pose), but "
         "azimuth_deg, distance, elevation_deg, lookat are set beside it"),
    ],
)  # fmt: skip
def test_a_bad_file_names_itself_the_field_and_the_fix(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(PresetFileError) as info:
        get_preset(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        ("my task.toml", "preset name 'my task' must be 1 to 64 letters, digits, '_', '-' or '.', the first a letter "
         "or digit: it names run directories and files; the name comes from the file's name: set name"),
        ("inverted_pendulum.toml",
         "name 'inverted_pendulum' (set in the file, or else its file name) is a built-in preset's; set"),
    ],
)  # fmt: skip
def test_a_file_whose_name_cannot_name_its_preset_says_to_set_one(tmp_path, file_name, message):
    path = _write(tmp_path, PENDULUM, file_name)
    with pytest.raises(PresetFileError) as info:
        get_preset(str(path))
    assert str(path) in str(info.value) and message in str(info.value)
    named = _write(tmp_path, 'name = "my_pendulum"\n' + PENDULUM, file_name)
    assert get_preset(str(named)).name == "my_pendulum"


def test_a_missing_file_and_an_unknown_name_say_what_is_wanted(tmp_path):
    with pytest.raises(PresetFileError, match="cannot be read"):
        get_preset(str(tmp_path / "nope.toml"))
    with pytest.raises(ValueError, match=r"known presets: .*or the path of a preset file"):
        get_preset("no_such_preset")


USER_ENV = '''
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv


class HeavyPendulum(InvertedPendulumEnv):
    """The user's own env: the v5 pendulum on the user's own MJCF (xml_file), with a longer episode."""
'''


def test_a_users_env_registers_by_entry_point_and_loads_its_own_mjcf(tmp_path, monkeypatch):
    import gymnasium.envs.mujoco as gym_mujoco  # here: train's imports chose the GL backend first

    assets = Path(gym_mujoco.__file__).parent / "assets"
    (tmp_path / "robots").mkdir()
    shutil.copy(assets / "inverted_pendulum.xml", tmp_path / "robots" / "my_pendulum.xml")
    (tmp_path / "my_envs.py").write_text(USER_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ('entry_point = "my_envs:HeavyPendulum"\nenv_kwargs = { xml_file = "robots/my_pendulum.xml" }\n'
            + PENDULUM.replace("InvertedPendulum-v5", "MyHeavyPendulum-v0"))  # fmt: skip
    path = _write(tmp_path, text)
    preset = get_preset(str(path))
    assert dict(preset.make_kwargs())["xml_file"] == str(tmp_path / "robots" / "my_pendulum.xml")
    env = make_env(preset, "pixels")
    try:
        assert type(env.unwrapped).__name__ == "HeavyPendulum"
        obs, _ = env.reset(seed=0)
        assert obs["pixels"].shape == (84, 84, 9) and obs["pixels"].max() > 0
    finally:
        env.close()
    # Two vector workers, spawned: each registers the env again from the preset it is handed.
    from train.envs import make_vector_env

    vec = make_vector_env(preset, "state", 2)
    try:
        obs, _ = vec.reset(seed=0)
        assert obs["state"].shape == (2, 4) and np.isfinite(obs["state"]).all()
    finally:
        vec.close()


def test_presets_check_saves_a_frame_and_prints_the_spec(tmp_path, capsys):
    path = _write(tmp_path, PENDULUM)
    assert main(["presets", "--check", str(path), "--check-steps", "40"]) == 0
    out = capsys.readouterr().out
    assert '"task_preset_sha256"' in out and "40 random steps" in out and out.rstrip().endswith("the robot move")
    assert (tmp_path / "task.png").stat().st_size > 0
    # A camera so far away that the robot is not in its frames: one error line names the problem.
    far = _write(tmp_path, PENDULUM.replace("distance = 2.5", "distance = 400.0"), "far.toml")
    assert main(["presets", "--check", str(far), "--check-steps", "40"]) == 1
    assert f"error: {far}: the camera frame is black: is [camera] pointed at the model?" in capsys.readouterr().err


def test_a_run_keeps_its_preset_and_refuses_another_task_definition(tmp_path):
    path = _write(tmp_path, PENDULUM)
    preset = get_preset(str(path))
    run_dir = tmp_path / "run"
    kept = save_preset_copy(preset, run_dir)
    assert kept is not None and kept == run_dir / "preset.toml" and load_preset_file(kept).sha256 == preset.sha256
    assert save_preset_copy(preset, run_dir) == kept  # the same task: nothing to do
    assert save_preset_copy(get_preset("inverted_pendulum"), run_dir / "builtin") is None
    path.write_text(PENDULUM.replace("distance = 2.5", "distance = 3.0"))
    changed = get_preset(str(path))
    with pytest.raises(PresetFileError, match=r"is not the task .* was started on .*--preset .*preset\.toml"):
        save_preset_copy(changed, run_dir)
    check_same_task(load_preset_file(kept), preset.sha256, "task", "policy.onnx")
    with pytest.raises(PresetFileError, match="another task definition"):
        check_same_task(changed, preset.sha256, "task", "policy.onnx")
    with pytest.raises(PresetFileError, match="trained on the built-in preset 'inverted_pendulum'"):
        check_same_task(changed, None, "inverted_pendulum", "policy.onnx")


FREE_BODY = """<mujoco>
  <worldbody>
    <light pos="0 0 3"/>
    <geom type="plane" size="2 2 0.1"/>
    <body name="box" pos="0 0 0.5"><freejoint name="root"/><geom type="box" size="0.1 0.1 0.1"/>
      <body name="arm">
        <joint name="elbow" type="hinge"/><geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03"/>
      </body>
    </body>
  </worldbody>
  {actuators}
</mujoco>
"""
ENV_OF_XML = '''
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box


class Box3D(MujocoEnv):
    """The user's own env on the user's own MJCF: qpos and qvel as its state."""

    # render_fps is 1 / dt: timestep 0.002 s x frame_skip 2.
    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 250}

    def __init__(self, xml_file, **kwargs):
        space = Box(-np.inf, np.inf, (15,), np.float64)
        super().__init__(xml_file, 2, observation_space=space, **kwargs)

    def _get_obs(self):
        return np.concatenate([self.data.qpos, self.data.qvel])

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        return self._get_obs(), 0.0, False, False, {}

    def reset_model(self):
        self.set_state(self.init_qpos, self.init_qvel)
        return self._get_obs()
'''


@pytest.mark.parametrize(
    ("actuators", "proprio", "message"),
    [
        ("", '["elbow.pos"]', "has no actions: its model ({xml}) has no actuators; add an <actuator> element"),
        ('<actuator><motor joint="elbow"/></actuator>', '["root.pos"]',
         "proprio: joint 'root' is not a hinge or slide joint (a free or ball joint has no single encoder "
         "reading); its hinge and slide joints are elbow"),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*Box action space maximum and minimum values are equal")  # no actuators
def test_a_users_mjcf_without_actuators_or_with_a_free_joint_in_proprio_is_named(
    tmp_path, monkeypatch, actuators, proprio, message
):
    xml = tmp_path / "box.xml"
    xml.write_text(FREE_BODY.format(actuators=actuators))
    (tmp_path / "box_envs.py").write_text(ENV_OF_XML)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = (f'env_id = "Box3D-{len(actuators)}-v0"\nentry_point = "box_envs:Box3D"\nproprio = {proprio}\n'
            f'env_kwargs = {{ xml_file = "box.xml" }}\n' + CAMERA)  # fmt: skip
    path = _write(tmp_path, text)
    with pytest.raises(PresetFileError) as info:
        get_preset(str(path))
    assert str(path) in str(info.value) and message.format(xml=xml) in str(info.value)


def test_a_marker_that_takes_part_in_contacts_is_named_with_its_file(tmp_path):
    path = _write(tmp_path, PENDULUM + "[marker_scale]\ncpole = 2.0\n")
    preset = get_preset(str(path))  # the name exists: the contact check comes when the env is made
    with pytest.raises(ValueError) as info:
        make_env(preset, "state")
    assert str(info.value) == (
        f"{path}: marker_scale: geom 'cpole' takes part in contacts; only visual markers (no contacts) may be scaled"
    )
