"""The VecEnv contract (same-step autoreset, next_obs, components, episode stats) for sync and async."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.components import RewardComponent, RewardTerms

TOY = "test/dict-obs-v0"


class ToyEnv(gym.Env):
    """Dict observations that count steps (episodes of 3 steps via the time limit); env `index` may fail to build
    (`fail_on`), and closing writes `closed_<index>` into `closed_dir`."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                                         "image": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, *, index: int, fail_on: int | None = None, closed_dir: str | None = None) -> None:
        if index == fail_on:
            raise RuntimeError(f"toy env {index} cannot be built")
        self.index, self.closed_dir, self.steps = index, closed_dir, 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": np.array([self.index, self.steps], dtype=np.float32),
                "image": np.full((4, 4, 3), self.steps, dtype=np.uint8)}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        self.steps += 1
        return self._obs(), 1.0, False, False, {}

    def close(self) -> None:
        if self.closed_dir is not None:
            (Path(self.closed_dir) / f"closed_{self.index}").touch()


@dataclass(frozen=True)
class ToyConstructor:
    """Module-level (picklable) constructor of the toy env."""

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None, camera: Any,
                 max_episode_steps: int | None, **kwargs: Any) -> gym.Env:
        return gym.wrappers.TimeLimit(ToyEnv(**kwargs), max_episode_steps or 3)


@dataclass(frozen=True)
class ToyIndex:
    """Vector kwargs: env i is toy env i."""

    def __call__(self, index: int) -> dict[str, Any]:
        return {"index": index}


class ToyTerms(RewardTerms):
    """One constant component."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.spec = (RewardComponent("alive", 1.0, "maximize", "1 per step"),)

    def values(self, action: Any, terminated: bool, info: dict[str, Any]) -> list[float]:
        return [1.0]


# Not registered, so that no other test's list of ids sees it (VecEnv takes the spec itself).
TOY_SPEC = envs.EnvSpec(TOY, ToyConstructor(), ToyTerms, vector_kwargs=ToyIndex())


def run(vectorization: str, env_id: str, num_envs: int, steps: int, **kwargs) -> tuple[envs.VecEnv, list]:
    """Reset with seed 3 and step with fixed random actions; returns the env and the per-step results."""
    vec = envs.make_vec(env_id, num_envs, seed=3, vectorization=vectorization, **kwargs)
    rng = np.random.default_rng(0)
    low, high = vec.single_action_space.low, vec.single_action_space.high
    results = [vec.reset(seed=3)]
    for _ in range(steps):
        results.append(vec.step(rng.uniform(low, high, size=(num_envs, *vec.single_action_space.shape))))
    return vec, results


def check_contract(vec: envs.VecEnv, results: list) -> None:
    """Shapes, dtypes, autoreset and episode statistics over a recorded run."""
    n, k = vec.num_envs, len(vec.reward_spec)
    obs_shape = vec.single_observation_space.shape
    weights = envs.spec_weights_vector(vec.reward_spec)
    running_return, running_length = np.zeros(n), np.zeros(n, dtype=int)
    previous_obs = results[0][0]
    ended = 0
    for obs, rewards, terminated, truncated, info in results[1:]:
        assert set(info) == {"next_obs", "reward_components", "success", "episode_return", "episode_length"}
        assert obs.shape == info["next_obs"].shape == (n, *obs_shape)
        assert rewards.shape == terminated.shape == truncated.shape == (n,)
        assert info["reward_components"].shape == (n, k) and info["reward_components"].dtype == np.float64
        assert info["success"].dtype == bool and info["episode_length"].dtype == np.int64
        np.testing.assert_allclose(info["reward_components"] @ weights, rewards, rtol=1e-5, atol=1e-6)
        done = terminated | truncated
        running_return += rewards
        running_length += 1
        np.testing.assert_array_equal(obs[~done], info["next_obs"][~done])
        assert np.all(np.isnan(info["episode_return"][~done])) and np.all(info["episode_length"][~done] == 0)
        for i in np.flatnonzero(done):
            assert not np.array_equal(obs[i], info["next_obs"][i])  # obs[i] already starts the next episode
            assert info["episode_return"][i] == pytest.approx(running_return[i])
            assert info["episode_length"][i] == running_length[i]
            running_return[i], running_length[i] = 0.0, 0
            ended += 1
        assert not np.array_equal(previous_obs, info["next_obs"])
        previous_obs = obs
    assert ended > 0, "the run should cover at least one episode end"


def test_sync_contract_with_truncation_and_termination():
    vec, results = run("sync", "Hopper-v5", 3, 120, max_episode_steps=25)
    check_contract(vec, results)
    assert any(r[3].any() for r in results[1:]) and any(r[2].any() for r in results[1:])
    vec.close()


def test_next_obs_on_truncation_is_the_final_observation():
    vec = envs.make_vec("Pendulum-v1", 2, seed=0, max_episode_steps=5, render_mode=None)
    single = envs.make("Pendulum-v1", seed=0, max_episode_steps=5, render_mode=None)
    vec.reset()
    single.reset()
    actions = np.full((2, 1), 0.5, dtype=np.float32)
    for _ in range(4):
        vec.step(actions)
        single.step(actions[0])
    obs, _, terminated, truncated, info = vec.step(actions)
    final_obs, reward, _, single_truncated, _ = single.step(actions[0])
    assert truncated.all() and single_truncated and not terminated.any()
    np.testing.assert_array_equal(info["next_obs"][0], final_obs)
    np.testing.assert_array_equal(obs[0], single.reset()[0])  # the next episode's start, from the seeded RNG
    assert info["episode_length"].tolist() == [5, 5]
    vec.close()
    single.close()


def test_success_column():
    vec = envs.make_vec("Reacher-v5", 2, seed=0, render_mode=None)
    vec.reset()
    _, _, _, _, info = vec.step(np.zeros((2, 2)))
    distances = info["reward_components"][:, 0]
    np.testing.assert_array_equal(info["success"], distances < 0.05)
    vec.close()
    vec = envs.make_vec("HalfCheetah-v5", 2, seed=0, render_mode=None)
    vec.reset()
    assert not vec.step(np.zeros((2, 6)))[4]["success"].any()  # undefined -> False
    vec.close()


def test_reset_seeds_env_i_with_seed_plus_i():
    vec = envs.make_vec("CartPole-v1", 3, render_mode=None)
    obs, _ = vec.reset(seed=10)
    for i in range(3):
        np.testing.assert_array_equal(obs[i], envs.make("CartPole-v1", render_mode=None).reset(seed=10 + i)[0])
    vec.close()


def test_sync_and_async_give_identical_trajectories():
    sync_vec, sync_results = run("sync", "Hopper-v5", 2, 60, max_episode_steps=20)
    async_vec, async_results = run("async", "Hopper-v5", 2, 60, max_episode_steps=20)
    assert async_vec.reward_spec == sync_vec.reward_spec
    assert async_vec.single_observation_space == sync_vec.single_observation_space
    check_contract(async_vec, async_results)
    np.testing.assert_array_equal(sync_results[0][0], async_results[0][0])
    for sync_step, async_step in zip(sync_results[1:], async_results[1:], strict=True):
        for sync_part, async_part in zip(sync_step[:4], async_step[:4], strict=True):
            np.testing.assert_array_equal(sync_part, async_part)
        for key, value in sync_step[4].items():
            np.testing.assert_array_equal(value, async_step[4][key])
    frame = async_vec.render()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8
    sync_vec.close()
    async_vec.close()
    assert async_vec.closed


def test_async_errors_surface_with_their_type():
    with pytest.raises(TypeError, match="ctrl_cost_weight"):
        envs.make_vec("Swimmer-v5", 1, vectorization="async", ctrl_cost=1.0)
    vec = envs.make_vec("Swimmer-v5", 1, vectorization="async", render_mode=None)
    vec.reset()
    with pytest.raises(ValueError, match="Action dimension mismatch"):
        vec.step(np.zeros((1, 5)))
    assert vec.closed
    with pytest.raises(ValueError, match="vectorization"):
        envs.make_vec("Swimmer-v5", 1, vectorization="threads")


def test_vec_spaces_and_reward_spec():
    vec = envs.make_vec("Ant-v5", 2, render_mode=None, contact_cost_weight=1e-3)
    assert vec.num_envs == 2
    assert vec.observation_space.shape == (2, *vec.single_observation_space.shape)
    assert vec.action_space.shape == (2, 8)
    assert dict((c.name, c.weight) for c in vec.reward_spec)["contact_cost"] == 1e-3
    vec.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_dict_observations_are_batched_key_by_key(vectorization):
    vec = envs.VecEnv(TOY_SPEC, 2, vectorization=vectorization, render_mode=None)
    obs, _ = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["state"], [[0, 0], [1, 0]])
    for step in range(1, 4):
        obs, _, _, truncated, info = vec.step(np.zeros((2, 1), dtype=np.float32))
        assert vec.observation_space.contains(obs) and vec.observation_space.contains(info["next_obs"])
        assert info["next_obs"]["image"].shape == (2, 4, 4, 3) and info["next_obs"]["image"].dtype == np.uint8
        np.testing.assert_array_equal(info["next_obs"]["state"], [[0, step], [1, step]])
        np.testing.assert_array_equal(obs["state"][:, 1], [0, 0] if step == 3 else [step, step])  # autoreset
        assert truncated.all() == (step == 3)
    np.testing.assert_array_equal(info["next_obs"]["image"], 3)
    np.testing.assert_array_equal(obs["image"], 0)
    vec.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_a_failing_env_closes_the_envs_already_built(vectorization, tmp_path):
    with pytest.raises(RuntimeError, match="toy env 1 cannot be built"):
        envs.VecEnv(TOY_SPEC, 3, vectorization=vectorization, render_mode=None, fail_on=1, closed_dir=str(tmp_path))
    built = ["closed_0"] if vectorization == "sync" else ["closed_0", "closed_2"]  # async builds all at once
    assert sorted(path.name for path in tmp_path.iterdir()) == built


def test_reset_takes_one_seed_per_env():
    vec = envs.make_vec("CartPole-v1", 3, render_mode=None)
    obs, _ = vec.reset(seed=[5, 9, 7])
    for i, seed in enumerate([5, 9, 7]):
        np.testing.assert_array_equal(obs[i], envs.make("CartPole-v1", render_mode=None).reset(seed=seed)[0])
    with pytest.raises(ValueError, match="one entry per env"):
        vec.reset(seed=[1, 2])
    with pytest.raises(TypeError, match="seed must be"):
        vec.reset(seed="1")
    vec.close()


def test_carla_vector_envs_are_refused_before_connecting(monkeypatch):
    def connect(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("make_vec tried to build a CARLA env")

    monkeypatch.setattr("envs.carla_env.CarlaEnv.__init__", connect)
    with pytest.raises(ValueError, match=r"carla/Town01-v0: a vector env can hold only one env.*one server each.*"
                                         r"-carla-rpc-port=2002"):
        envs.make_vec("carla/Town01-v0", 2)
