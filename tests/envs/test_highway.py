"""highway-env driving scenarios: reward = weighted component sum, success, collisions, both action kinds, headless
frames, state snapshots, vector envs and gymnasium's env checker."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

DRIVING_IDS = [
    "highway/highway-fast-v0", "highway/merge-v0", "highway/roundabout-v0", "highway/intersection-v0",
    "highway/racetrack-v0",
]  # fmt: skip
COMMON = ["collision", "speed", "right_lane", "lane_centering", "on_road", "action_change"]
FAST = "highway/highway-fast-v0"
IDLE, FASTER = 1, 3  # highway-env meta-action ids


def assert_reward_is_component_sum(env: envs.RewardComponentsWrapper, reward: float, info: dict) -> None:
    """reward == raw components @ signed weights, in spec order."""
    values = np.fromiter(info["reward_components"].values(), dtype=np.float64)
    assert list(info["reward_components"]) == [c.name for c in env.reward_spec]
    assert reward == pytest.approx(float(values @ envs.spec_weights_vector(env.reward_spec)), abs=1e-12)


def test_ids_are_registered_without_importing_highway_env():
    assert set(DRIVING_IDS) <= set(envs.list_envs("driving"))
    code = "import sys, envs; envs.list_envs(); assert 'highway_env' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("action", ["discrete", "continuous"])
@pytest.mark.parametrize("env_id", DRIVING_IDS)
def test_each_id_steps_and_reports_components_that_reproduce_the_reward(env_id, action):
    env = envs.make(env_id, render_mode=None, seed=0, action=action)
    try:
        obs, _ = env.reset()
        assert obs.ndim == 1 and obs.dtype == np.float32 and env.observation_space.contains(obs)
        if action == "discrete":
            assert isinstance(env.action_space, gym.spaces.Discrete)
        else:
            assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape in ((1,), (2,))
        names = [c.name for c in env.reward_spec]
        assert names == COMMON + (["arrived"] if env_id.endswith("intersection-v0") else [])
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs.shape == env.observation_space.shape
            assert_reward_is_component_sum(env, reward, info)
            assert isinstance(info["success"], bool) and isinstance(info["native_reward"], float)
            if terminated or truncated:
                env.reset()
    finally:
        env.close()


def test_weights_follow_highway_env_config_keys_and_ours():
    spec = {c.name: (c.weight, c.direction) for c in envs.reward_spec(FAST)}
    assert spec == {
        "collision": (1.0, "minimize"), "speed": (0.4, "maximize"), "right_lane": (0.1, "maximize"),
        "lane_centering": (0.0, "maximize"), "on_road": (1.0, "maximize"), "action_change": (0.0, "minimize"),
    }  # fmt: skip
    custom = {c.name: c.weight for c in envs.reward_spec(FAST, collision_reward=-3, on_road_weight=0.5,
                                                         action="continuous")}
    assert (custom["collision"], custom["on_road"], custom["action_change"]) == (3.0, 0.5, 0.05)
    racetrack = {c.name: c.weight for c in envs.reward_spec("highway/racetrack-v0")}
    assert racetrack["lane_centering"] == 1.0 and racetrack["speed"] == 0.0


def test_action_change_is_the_comfort_term():
    env = envs.make(FAST, render_mode=None, seed=0, action="continuous")
    env.reset()
    first = env.step(np.array([0.5, -0.2], dtype=np.float32))[4]["reward_components"]["action_change"]
    second = env.step(np.array([2.0, 0.3], dtype=np.float32))[4]["reward_components"]["action_change"]
    assert first == 0.0 and second == pytest.approx(0.5 + 0.5)  # clipped to [-1, 1] as highway-env does
    env.close()
    env = envs.make(FAST, render_mode=None, seed=0)
    env.reset()
    changes = [env.step(action)[4]["reward_components"]["action_change"] for action in (IDLE, IDLE, FASTER, FASTER)]
    assert changes == [0.0, 0.0, 1.0, 0.0]
    env.close()


def test_success_only_when_the_time_limit_is_reached_without_a_crash():
    env = envs.make(FAST, render_mode=None, seed=0, max_episode_steps=3)
    env.reset()
    results = [env.step(IDLE) for _ in range(3)]
    assert [(r[2], r[3], r[4]["success"]) for r in results] == [(False, False, False)] * 2 + [(False, True, True)]
    assert results[-1][4]["reward_components"]["collision"] == 0.0
    env.close()


def test_driving_into_a_stopped_car_fires_the_collision_component():
    from highway_env.vehicle.kinematics import Vehicle

    env = envs.make(FAST, render_mode=None, seed=0)
    env.reset()
    inner = env.unwrapped
    lane = inner.vehicle.lane
    ahead = lane.local_coordinates(inner.vehicle.position)[0] + 12.0  # the ego drives ~25 m per step
    inner.road.vehicles.append(Vehicle(inner.road, lane.position(ahead, 0.0), lane.heading_at(ahead), speed=0.0))
    _, reward, terminated, truncated, info = env.step(IDLE)
    assert terminated and not truncated and info["success"] is False
    assert info["reward_components"]["collision"] == 1.0
    assert_reward_is_component_sum(env, reward, info)
    env.close()


def test_frames_are_headless_non_blank_and_of_the_requested_size(tmp_path):
    import imageio.v3 as iio

    env = envs.make(FAST, width=320, height=128, seed=0)
    env.reset()
    env.step(IDLE)
    frame = env.render()
    assert frame.shape == (128, 320, 3) and frame.dtype == np.uint8
    colours = np.unique(frame.reshape(-1, 3), axis=0)
    assert len(colours) >= 4  # road, lane marks, the green ego and blue traffic (all black before the viewer fix)
    assert np.any(np.all(frame == (50, 200, 0), axis=-1)), "the ego vehicle is not drawn"
    iio.imwrite(tmp_path / "highway.png", frame)
    env.close()
    assert envs.make("highway/roundabout-v0", seed=0).render().shape == (600, 600, 3)


def test_states_round_trip_and_restored_scenes_render_identically():
    source = envs.make(FAST, width=200, height=100, seed=0, action="continuous", record_state=True)
    target = envs.make(FAST, width=200, height=100, seed=7, action="continuous", vehicles_count=5)
    try:
        source.reset()
        target.reset()
        for _ in range(2):
            state = source.step(np.array([0.3, 0.4], dtype=np.float32))[4]["state"]
        assert envs.supports_state(source) and state.dtype == np.float64
        assert state[0] == len(source.unwrapped.road.vehicles) > len(target.unwrapped.road.vehicles)
        envs.set_state(target, state)  # the target has fewer vehicles: it creates the missing ones
        np.testing.assert_array_equal(envs.get_state(target), state)
        envs.set_state(source, state)
        np.testing.assert_array_equal(source.render(), target.render())
        with pytest.raises(ValueError, match="values"):
            envs.set_state(target, state[:-1])
    finally:
        source.close()
        target.close()


def test_sync_vector_env():
    vec = envs.make_vec(FAST, 2, seed=0, render_mode=None)
    try:
        obs, _ = vec.reset(seed=0)
        assert obs.shape == (2, 25)
        for _ in range(3):
            obs, rewards, terminated, truncated, info = vec.step(np.array([IDLE, FASTER]))
            assert info["reward_components"].shape == (2, len(COMMON))
            np.testing.assert_allclose(rewards, info["reward_components"] @ envs.spec_weights_vector(vec.reward_spec))
            assert info["success"].dtype == bool
    finally:
        vec.close()


def test_gymnasium_env_checker_passes():
    env = envs.make("highway/racetrack-v0", width=64, height=64)
    check_env(env, skip_render_check=False)
    env.close()


def test_bad_arguments_fail_clearly():
    with pytest.raises(TypeError, match=r"highway/merge-v0.*'colision_reward' -> did you mean 'collision_reward'"):
        envs.make("highway/merge-v0", colision_reward=-2)
    with pytest.raises(TypeError, match="width=, height="):
        envs.make(FAST, screen_width=100)
    with pytest.raises(ValueError, match="action must be"):
        envs.make(FAST, action="steer")
    with pytest.raises(ValueError, match="no cameras"):
        envs.make(FAST, camera="top")


@pytest.mark.parametrize(("env_id", "key", "instead"), [
    ("highway/merge-v0", "merging_speed_reward", "high_speed_reward"),
    ("highway/merge-v0", "lane_change_reward", "action_change_weight"),
    ("highway/roundabout-v0", "lane_change_reward", "action_change_weight"),
    (FAST, "lane_change_reward", "action_change_weight"),
    (FAST, "normalize_reward", "the component weights"),
    ("highway/racetrack-v0", "action_reward", "action_change_weight"),
])
def test_highway_env_reward_keys_our_reward_ignores_are_rejected(env_id, key, instead):
    with pytest.raises(TypeError, match=rf"{env_id}: highway-env reward key\(s\) '{key}' would be ignored.*"
                                        rf"instead of '{key}' use {instead}"):
        envs.make(env_id, **{key: -1.0})
