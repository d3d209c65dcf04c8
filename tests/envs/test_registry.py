"""Registry, make() arguments, error messages and seeding."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.components import RewardComponent, RewardTerms


def test_importing_envs_sets_headless_gl_variables():
    assert os.environ["MUJOCO_GL"] in ("egl", "osmesa", "glfw")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        assert os.environ["PYOPENGL_PLATFORM"] == os.environ["MUJOCO_GL"]
    assert os.environ["SDL_VIDEODRIVER"] == "dummy"


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("halfcheetah", "HalfCheetah-v5"), ("HalfCheetah-v4", "HalfCheetah-v5"), ("hopper", "Hopper-v5"),
     ("cartpole-v0", "CartPole-v1"), ("pendulum", "Pendulum-v1")],
)  # fmt: skip
def test_unknown_id_lists_close_matches(typo, expected):
    with pytest.raises(envs.UnknownEnvError) as raised:
        envs.make(typo)
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert expected in message and "envs.list_envs()" in message and repr(typo) in message


def test_unknown_id_without_matches_still_says_how_to_list():
    with pytest.raises(envs.UnknownEnvError, match=r"envs\.list_envs\(\)"):
        envs.make("zzzz")


def test_bad_kwarg_names_the_kwarg_and_the_env():
    with pytest.raises(TypeError, match=r"HalfCheetah-v5.*'ctrl_cost'.*ctrl_cost_weight"):
        envs.make("HalfCheetah-v5", ctrl_cost=0.2)
    with pytest.raises(TypeError, match=r"Acrobot-v1.*'g'"):
        envs.make("Acrobot-v1", g=9.8)
    with pytest.raises(TypeError, match="camera="):
        envs.make("Hopper-v5", camera_name="track")


def test_bad_render_arguments():
    with pytest.raises(ValueError, match="render_mode"):
        envs.make("Pendulum-v1", render_mode="human")
    with pytest.raises(ValueError, match="width"):
        envs.make("Pendulum-v1", width=0)
    with pytest.raises(ValueError, match="no camera 'nope'.*track"):
        envs.make("HalfCheetah-v5", camera="nope")
    with pytest.raises(ValueError, match="no cameras"):
        envs.make("CartPole-v1", camera=0)
    env = envs.make("Pendulum-v1", render_mode=None)
    with pytest.raises(RuntimeError, match="render_mode='rgb_array'"):
        env.render()


def test_max_episode_steps_and_kwargs_reach_the_simulator():
    env = envs.make("Pendulum-v1", render_mode=None, max_episode_steps=7, g=3.0)
    assert env.unwrapped.g == 3.0
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(7)]
    assert truncated == [False] * 6 + [True]


@pytest.mark.parametrize(("env_id", "default"), [("Pendulum-v1", 200), ("HalfCheetah-v5", 1000),
                                                 ("metaworld/reach-v3", 500), ("highway/highway-fast-v0", 30),
                                                 ("highway/racetrack-v0", 1500), ("textured/CartPole-v1", 500)])
def test_every_family_reports_its_time_limit(env_id: str, default: int):
    # Meta-World and highway-env keep their own limits (no gymnasium spec): the wrapper still finds them
    env = envs.make(env_id, render_mode=None)
    assert env.max_episode_steps == default
    env.close()
    env = envs.make(env_id, render_mode=None, max_episode_steps=4)
    assert env.max_episode_steps == 4
    env.close()


def test_a_reported_limit_is_where_episodes_are_cut():
    env = envs.make("metaworld/reach-v3", render_mode=None, seed=0, max_episode_steps=5)
    env.reset()
    truncated = [env.step(env.action_space.sample())[3] for _ in range(env.max_episode_steps)]
    assert truncated == [False] * 4 + [True]
    env.close()


def test_seeded_make_is_deterministic():
    def trajectory(seed: int) -> np.ndarray:
        env = envs.make("Hopper-v5", render_mode=None, seed=seed)
        observations = [env.reset()[0]]
        for _ in range(30):
            observations.append(env.step(env.action_space.sample())[0])  # action space seeded by make
        env.close()
        return np.array(observations)

    np.testing.assert_array_equal(trajectory(4), trajectory(4))
    assert not np.array_equal(trajectory(4), trajectory(5))


def test_seed_is_used_once_then_explicit_seeds_win():
    env = envs.make("CartPole-v1", render_mode=None, seed=11)
    first, _ = env.reset()
    second, _ = env.reset()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(env.reset(seed=11)[0], first)


class ConstantTerms(RewardTerms):
    """Test decomposition: one component equal to the reward."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.spec = (RewardComponent("reward", 1.0, "maximize", "the env reward"),)

    def values(self, action, terminated, info):
        return [-1.0 if not terminated else 0.0]


def build_acrobot(*, render_mode, width, height, camera, max_episode_steps, **kwargs) -> gym.Env:
    return gym.make("Acrobot-v1", render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs)


def test_register_a_new_family():
    envs.register("TestFamily-v0", build_acrobot, ConstantTerms, family="test", description="acrobot again")
    try:
        assert envs.list_envs("test") == ["TestFamily-v0"]
        assert envs.get_env_spec("TestFamily-v0").family == "test"
        with pytest.raises(ValueError, match="already registered"):
            envs.register("TestFamily-v0", build_acrobot, ConstantTerms)
        env = envs.make("TestFamily-v0", render_mode=None, seed=0)
        env.reset()
        _, reward, _, _, info = env.step(0)
        assert info["reward_components"] == {"reward": reward}
        env.close()
    finally:
        envs.registry._REGISTRY.pop("TestFamily-v0", None)
