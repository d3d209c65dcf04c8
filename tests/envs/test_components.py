"""Every registered env's reward must be reproducible from its raw components and signed weights."""

from __future__ import annotations

import numpy as np
import pytest

import envs

ALL_IDS = [i for i in envs.list_envs() if not i.startswith("carla/")]  # need a server: test_carla_live.py


def rollout_check(env: envs.RewardComponentsWrapper, steps: int, seed: int = 0) -> list[dict]:
    """Random rollout asserting reward == components @ signed weights on every step; returns the infos."""
    weights = envs.spec_weights_vector(env.reward_spec)
    names = [component.name for component in env.reward_spec]
    env.reset(seed=seed)
    env.action_space.seed(seed)
    infos = []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        components = info["reward_components"]
        assert list(components) == names
        assert all(isinstance(value, float) for value in components.values())
        values = np.fromiter(components.values(), dtype=np.float64)
        assert np.isclose(values @ weights, reward, rtol=1e-5, atol=1e-6)
        assert np.isclose(envs.combine_components(env.reward_spec, components), reward, rtol=1e-5, atol=1e-6)
        infos.append(info)
        if terminated or truncated:
            env.reset()
    return infos


def test_registry_covers_the_agreed_ids():
    expected = {
        "Pendulum-v1", "CartPole-v1", "MountainCarContinuous-v0", "Acrobot-v1", "HalfCheetah-v5", "Hopper-v5",
        "Walker2d-v5", "Ant-v5", "Humanoid-v5", "Reacher-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5",
        "Swimmer-v5",
    }  # fmt: skip
    assert expected <= set(ALL_IDS)
    assert set(envs.list_envs("mujoco")) | set(envs.list_envs("classic_control")) == expected


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_reward_equals_signed_component_sum(env_id):
    env = envs.make(env_id, render_mode=None)
    spec = env.reward_spec
    assert isinstance(spec, tuple) and spec
    assert all(isinstance(c, envs.RewardComponent) and c.direction in ("maximize", "minimize") for c in spec)
    assert len({c.name for c in spec}) == len(spec)
    infos = rollout_check(env, steps=150)
    assert ("success" in infos[0]) == env.has_success
    if env.has_success:
        assert all(isinstance(info["success"], bool) for info in infos)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs", "name", "weight"),
    [
        ("HalfCheetah-v5", {"ctrl_cost_weight": 0.2}, "control_cost", 0.2),
        ("HalfCheetah-v5", {"forward_reward_weight": 2.5}, "forward_velocity", 2.5),
        ("Hopper-v5", {"healthy_reward": 0.5}, "healthy", 0.5),
        ("Ant-v5", {"contact_cost_weight": 1e-3}, "contact_cost", 1e-3),
        ("Humanoid-v5", {"ctrl_cost_weight": 0.05}, "control_cost", 0.05),
        ("Reacher-v5", {"reward_dist_weight": 3.0}, "distance", 3.0),
        ("InvertedDoublePendulum-v5", {"healthy_reward": 4.0}, "alive", 4.0),
        ("CartPole-v1", {"sutton_barto_reward": True}, "fallen", 1.0),
    ],
)
def test_weight_kwargs_change_the_spec_and_still_reproduce(env_id, kwargs, name, weight):
    default = {c.name: c.weight for c in envs.reward_spec(env_id)}
    env = envs.make(env_id, render_mode=None, **kwargs)
    changed = {c.name: c.weight for c in env.reward_spec}
    assert changed[name] == weight != default[name]
    assert {c.name: c.weight for c in envs.reward_spec(env_id, **kwargs)} == changed
    rollout_check(env, steps=60)
    env.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("HalfCheetah-v5", {"ctrl_cost_weight": 0.0}),
        ("Hopper-v5", {"healthy_reward": 0.0}),
        ("Ant-v5", {"contact_cost_weight": 0.0, "ctrl_cost_weight": 0.0}),
        ("Reacher-v5", {"reward_control_weight": 0.0}),
    ],
)
def test_zero_weight_components_still_report_raw_values(env_id, kwargs):
    env = envs.make(env_id, render_mode=None, seed=1, **kwargs)
    env.reset()
    action = env.action_space.sample()
    _, _, _, _, info = env.step(action)
    components = info["reward_components"]
    assert components["control_cost"] == pytest.approx(float(np.sum(np.square(action))))
    if "healthy" in components:
        assert components["healthy"] == 1.0
    if "contact_cost" in components:
        assert components["contact_cost"] >= 0.0
    env.close()


def test_cartpole_components_around_the_fall():
    for sutton_barto in (False, True):
        env = envs.make("CartPole-v1", render_mode=None, sutton_barto_reward=sutton_barto)
        env.reset(seed=0)
        weights = envs.spec_weights_vector(env.reward_spec)
        terminated, steps = False, 0
        while not terminated:
            _, reward, terminated, _, info = env.step(1)
            steps += 1
        assert info["reward_components"] == {"upright": 1.0, "fallen": 1.0}
        assert reward == (-1.0 if sutton_barto else 1.0)
        with pytest.warns(UserWarning, match="already returned terminated"):
            _, reward, _, _, info = env.step(1)  # stepping past the end: gymnasium's defined 0 / -1 reward
        assert info["reward_components"] == {"upright": 0.0, "fallen": 1.0}
        assert reward == pytest.approx(np.fromiter(info["reward_components"].values(), float) @ weights)
        env.close()


def test_mountain_car_success_and_goal_bonus():
    env = envs.make("MountainCarContinuous-v0", render_mode=None, seed=0)
    obs, _ = env.reset()
    for _ in range(999):  # pump energy: push in the direction of motion
        obs, reward, terminated, _, info = env.step(np.array([1.0 if obs[1] >= 0 else -1.0], dtype=np.float32))
        if terminated:
            break
    assert terminated and info["success"] is True
    assert info["reward_components"] == {"goal_reached": 1.0, "control_cost": 1.0}
    assert reward == pytest.approx(100.0 - 0.1)
    env.close()


def test_reacher_success_threshold_is_distance_below_005():
    env = envs.make("Reacher-v5", render_mode=None, seed=0)
    env.reset()
    _, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["success"] == (info["reward_components"]["distance"] < 0.05)
    env.close()


def test_combine_components_and_weights_vector():
    spec = (
        envs.RewardComponent("speed", 2.0, "maximize", "m/s"),
        envs.RewardComponent("effort", 0.5, "minimize", "sum a^2"),
    )
    np.testing.assert_array_equal(envs.spec_weights_vector(spec), [2.0, -0.5])
    assert envs.combine_components(spec, {"speed": 1.5, "effort": 2.0}) == pytest.approx(2.0)
    batch = np.array([[1.5, 2.0], [0.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(envs.combine_components(spec, batch), [2.0, -2.0, 2.0])
    with pytest.raises(KeyError, match="effort"):
        envs.combine_components(spec, {"speed": 1.0})
    with pytest.raises(ValueError, match="last axis"):
        envs.combine_components(spec, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="direction"):
        envs.RewardComponent("x", 1.0, "up", "")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        spec[0].weight = 3.0  # frozen
