"""`robotrl reward generate` end to end against a scripted OpenAI-compatible server on loopback, replayed offline from
its cache; the env descriptions' field bindings checked against real env steps; the reward library's examples run in
the sandbox on their envs."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import envs
from reward_learning.text2reward import load_library, sandbox_validator
from robotrl.cli import main
from robotrl.reward_cli import sample_transitions, task_description

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward_learning"))
from fake_llm import FakeLLMServer  # noqa: E402  (the scripted server shared with the reward_learning tests)

BROKEN = "```python\ndef compute_dense_reward(obs, action, next_obs):\n    return np.zeros(len(obs))\n```"
VALID = textwrap.dedent('''
    Here you go:
    ```python
    import numpy as np

    def compute_dense_reward(obs, action, next_obs, terminated=None, **named):
        upright = field(next_obs, "cos_theta")
        spin = 0.1 * np.square(field(next_obs, "angular_velocity"))
        return upright - spin, {"upright": upright, "spin": -spin}
    ```
''')


def generate(tmp_path: Path, url: str, *options: str) -> int:
    return main(["reward", "generate", "--env", "Pendulum-v1", "keep the pendulum upright", "--llm", url,
                 "--model", "fake", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--samples", "200", *options])


def test_generate_end_to_end_then_replays_from_the_cache(tmp_path, capsys):
    with FakeLLMServer([BROKEN, VALID]) as server:
        assert generate(tmp_path, server.url) == 0
    assert "constant" in server.requests[1]["messages"][-1]["content"]  # the rejection went back to the model
    output = capsys.readouterr().out
    assert "round 0: rejected (output)" in output and "round 1: valid" in output and "upright" in output
    reward = tmp_path / "out" / "reward.py"
    assert main(["reward", "check", str(reward), "--env", "Pendulum-v1", "--samples", "100"]) == 0
    first = reward.read_text()
    with FakeLLMServer([]) as silent:  # same request, answered from the cache: no LLM needed
        assert generate(tmp_path, silent.url) == 0
    assert silent.requests == [] and reward.read_text() == first
    summary = json.loads((tmp_path / "out" / "result.json").read_text())
    assert summary["llm"]["model"] == "fake" and summary["config"]["rounds"] == 3


def test_generate_fails_with_status_1_after_the_round_limit(tmp_path, capsys):
    with FakeLLMServer([BROKEN] * 3) as server:
        assert generate(tmp_path, server.url, "--rounds", "1", "--no-cache") == 1
    assert len(server.requests) == 2
    assert "no valid reward code after 2 replies" in capsys.readouterr().err
    assert not (tmp_path / "out" / "reward.py").exists()


def test_generate_reports_an_unreachable_server(tmp_path, capsys):
    with FakeLLMServer([]) as server:
        url = server.url
    assert generate(tmp_path, url, "--no-cache") == 2
    assert "cannot reach" in capsys.readouterr().err


def read_field(description, name: str, obs: np.ndarray) -> np.ndarray:
    """`field(obs, name)` as the LLM's code gets it: run the binding code the description appends to the code."""
    namespace: dict = {}
    exec(description.binding_code(), namespace)
    return namespace["field"](obs, name)


def step_fields(env_id: str, steps: int = 5, **kwargs):
    """(description, env, [(next_obs, info)]) of a few random steps."""
    description = task_description(env_id)
    env = envs.make(env_id, render_mode=None, seed=0, **kwargs)
    env.reset(seed=0)
    out = []
    for _ in range(steps):
        next_obs, _, _, _, info = env.step(env.action_space.sample())
        out.append((np.asarray(next_obs, dtype=np.float64)[None], info))
    return description, env, out


def test_halfcheetah_velocity_field_is_the_simulator_velocity_and_tracks_the_reward_component():
    description, env, steps = step_fields("HalfCheetah-v5", 200)
    assert read_field(description, "x_velocity", steps[-1][0])[0] == pytest.approx(env.unwrapped.data.qvel[0])
    assert read_field(description, "rooty", steps[-1][0])[0] == pytest.approx(env.unwrapped.data.qpos[2])
    # the component is displacement / dt over the 5 physics substeps, the field the velocity after the last one
    fields = np.array([read_field(description, "x_velocity", obs)[0] for obs, _ in steps])
    component = np.array([info["reward_components"]["forward_velocity"] for _, info in steps])
    weight = next(c.weight for c in description.components if c.name == "forward_velocity")
    assert np.corrcoef(fields, component / weight)[0, 1] > 0.8
    env.close()


def test_hopper_walker_and_ant_bindings_index_the_simulator_state():
    for env_id, checks in [("Hopper-v5", {"torso_height": ("qpos", 1), "torso_angle": ("qpos", 2),
                                          "foot_velocity": ("qvel", 5)}),
                           ("Walker2d-v5", {"foot_left_angle": ("qpos", 8), "x_velocity": ("qvel", 0)}),
                           ("Ant-v5", {"torso_height": ("qpos", 2), "y_velocity": ("qvel", 1),
                                       "back_right_ankle_angle": ("qpos", 14)})]:
        description, env, steps = step_fields(env_id, 3)
        data = env.unwrapped.data
        for name, (array, index) in checks.items():
            expected = np.clip(getattr(data, array)[index], -10, 10)
            assert read_field(description, name, steps[-1][0])[0] == pytest.approx(expected), (env_id, name)
        env.close()


def test_metaworld_binding_reads_hand_object_and_goal():
    description, env, steps = step_fields("metaworld/pick-place-v3", 3)
    obs = steps[-1][0]
    inner = env.unwrapped
    assert read_field(description, "hand_pos", obs)[0] == pytest.approx(inner.get_endeff_pos(), abs=1e-6)
    assert read_field(description, "obj1_pos", obs)[0] == pytest.approx(inner._get_pos_objects(), abs=1e-6)
    assert read_field(description, "goal_pos", obs)[0] == pytest.approx(inner._target_pos, abs=1e-6)
    assert 0.0 <= read_field(description, "gripper_openness", obs)[0] <= 1.0
    env.close()


def test_highway_binding_reads_the_ego_row():
    description, env, steps = step_fields("highway/highway-fast-v0", 2)
    ego = env.unwrapped.vehicle
    obs = steps[-1][0]
    low, high = (-80.0, 80.0)
    assert read_field(description, "ego_vx", obs)[0] == pytest.approx(np.clip(
        2 * (ego.velocity[0] - low) / (high - low) - 1, -1, 1), abs=1e-5)
    assert read_field(description, "others_presence", obs).shape == (1, 4)
    assert "LANE_LEFT" in description.text()
    env.close()


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Pendulum-v1",
                                    "metaworld/reach-v3", "metaworld/pick-place-v3", "highway/highway-fast-v0"])
def test_library_examples_run_in_the_sandbox_on_their_env(env_id):
    examples = [e for e in load_library() if e.env == env_id]
    assert examples
    description = task_description(env_id)
    transitions, components = sample_transitions(env_id, 100, 0)
    validate = sandbox_validator(transitions, components)
    for example in examples:  # the validator raises RewardCodeError on a rejected (or constant) reward
        stats = validate(description.bind(example.code))
        assert stats["reward"]["std"] > 0 and len(stats) > 1  # a varying total and its named terms
