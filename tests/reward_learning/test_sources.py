"""Reward sources: the env reward and weighted reward components, on real env batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from reward_learning import ComponentReward, EnvReward, RewardSource


def env_batch(env_id: str, steps: int = 64, seed: int = 0, **kwargs) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Random-action transitions of a real env as a reward-source batch, plus the component names."""
    vec = envs.make_vec(env_id, 2, seed=seed, **kwargs)
    obs, _ = vec.reset(seed=seed)
    vec.single_action_space.seed(seed)
    rows: dict[str, list] = {k: [] for k in ("obs", "action", "next_obs", "env_reward", "components", "terminated")}
    for _ in range(steps // 2):
        action = np.stack([vec.single_action_space.sample() for _ in range(2)])
        next_obs, reward, terminated, _, info = vec.step(action)
        for key, value in (("obs", obs), ("action", action), ("next_obs", info["next_obs"]), ("env_reward", reward),
                           ("components", info["reward_components"]), ("terminated", terminated)):
            rows[key].append(np.asarray(value, dtype=np.float64))
        obs = next_obs
    names = [c.name for c in vec.reward_spec]
    vec.close()
    batch = {k: torch.as_tensor(np.concatenate(v), dtype=torch.float32) for k, v in rows.items()}
    return batch, names


def test_env_reward_passes_through():
    batch, _ = env_batch("Pendulum-v1", steps=16)
    source = EnvReward()
    assert isinstance(source, RewardSource) and source.name == "env"
    assert torch.equal(source(batch), batch["env_reward"])
    assert source.describe() == {"name": "env"}


@pytest.mark.parametrize("env_id, kwargs", [
    ("Pendulum-v1", {}),
    ("HalfCheetah-v5", {}),
    ("Hopper-v5", {"ctrl_cost_weight": 0.01}),
    ("MountainCarContinuous-v0", {}),
])
def test_component_reward_with_spec_weights_reproduces_env_reward(env_id, kwargs):
    batch, names = env_batch(env_id, **kwargs)
    spec = envs.reward_spec(env_id, **kwargs)
    weights = dict(zip(names, envs.spec_weights_vector(spec).tolist(), strict=True))
    source = ComponentReward(names, weights)
    reward = source(batch)
    assert reward.shape == batch["env_reward"].shape
    torch.testing.assert_close(reward, batch["env_reward"], rtol=1e-4, atol=1e-4)
    assert source.describe() == {"name": "components", "weights": weights}


def test_component_reward_reweights_and_drops_terms():
    batch, names = env_batch("Pendulum-v1", steps=32)
    assert names == ["angle_squared", "angular_velocity_squared", "torque_squared"]
    only_angle = ComponentReward(names, {"angle_squared": -1.0})
    torch.testing.assert_close(only_angle(batch), -batch["components"][:, 0])
    mixed = ComponentReward(names, {"torque_squared": 2.0, "angle_squared": 0.5})  # order of the dict is irrelevant
    torch.testing.assert_close(mixed(batch), 0.5 * batch["components"][:, 0] + 2.0 * batch["components"][:, 2])
    assert torch.equal(ComponentReward(names, {})(batch), torch.zeros(32))


def test_component_reward_unknown_name_lists_the_declared_components():
    names = ["angle_squared", "angular_velocity_squared", "torque_squared"]
    with pytest.raises(ValueError) as info:
        ComponentReward(names, {"angle": -1.0, "torque_squared": -0.001})
    message = str(info.value)
    assert "'angle'" in message and "torque_squared" in message and "angular_velocity_squared" in message
    assert "unknown reward component" in message


def test_component_reward_on_a_hand_made_batch():
    source = ComponentReward(["a", "b"], {"a": 1.0, "b": -1.0})
    batch = {"components": torch.tensor([[1.0, 2.0], [3.0, 1.0]])}
    assert source(batch).tolist() == [-1.0, 2.0]


def test_reward_source_is_abstract():
    with pytest.raises(TypeError):
        RewardSource()  # type: ignore[abstract]
