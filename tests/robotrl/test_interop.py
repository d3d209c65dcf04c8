"""Gymnasium and Stable-Baselines3 wrappers that train on a RewardSource instead of the env reward."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from reward_learning import ComponentReward, RewardSource
from robotrl.interop import RewardSourceWrapper

REPO = Path(__file__).resolve().parents[2]
ALL_KEYS = {"obs", "action", "next_obs", "env_reward", "components", "terminated", "truncated", "episode_step"}


class FnReward(RewardSource):
    """A reward computed by `fn` from the batch; records every batch it is given."""

    name = "fn"

    def __init__(self, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], needs: set[str] | None) -> None:
        self.fn = fn
        self.needs = None if needs is None else frozenset(needs)
        self.batches: list[dict[str, torch.Tensor]] = []

    def __call__(self, batch):
        self.batches.append(dict(batch))
        return self.fn(batch)


def pendulum(steps: int | None = None, **kwargs) -> gym.Env:
    return envs.make("Pendulum-v1", render_mode=None, max_episode_steps=steps, **kwargs)


def spec_weight_source(env_id: str) -> ComponentReward:
    spec = envs.reward_spec(env_id)
    return ComponentReward([c.name for c in spec], {c.name: c.signed_weight for c in spec})


def dummy_vec(env_id: str, steps: list[int], monitor: bool = False):
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def maker(limit: int) -> Callable[[], gym.Env]:
        def build() -> gym.Env:
            env = envs.make(env_id, render_mode=None, max_episode_steps=limit)
            return Monitor(env) if monitor else env
        return build

    venv = DummyVecEnv([maker(limit) for limit in steps])
    venv.seed(0)
    venv.action_space.seed(0)
    return venv


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gym_wrapper_rewards_equal_the_source_on_the_same_transitions():
    fn = lambda b: -b["obs"][:, 0] + 0.5 * b["action"][:, 0] - 0.1 * b["next_obs"][:, 2]
    source = FnReward(fn, {"obs", "action", "next_obs", "episode_step", "truncated"})
    wrapped, twin = RewardSourceWrapper(pendulum(10, seed=3), source), pendulum(10, seed=3)
    wrapped.action_space.seed(1)
    obs, _ = wrapped.reset()
    twin_obs, _ = twin.reset()
    np.testing.assert_array_equal(obs, twin_obs)
    for step in range(25):
        action = wrapped.action_space.sample()
        next_obs, reward, terminated, truncated, info = wrapped.step(action)
        twin_next, twin_reward, _, _, _ = twin.step(action)
        np.testing.assert_array_equal(next_obs, twin_next)
        expected = -twin_obs[0] + 0.5 * action[0] / 2 - 0.1 * twin_next[2]  # Pendulum's [-2, 2] seen as [-1, 1]
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert info["env_reward"] == twin_reward and info["learned_reward"] == reward
        batch = source.batches[-1]
        assert set(batch) == source.needs
        assert batch["obs"].dtype == torch.float32 and batch["obs"].shape == (1, 3) and batch["action"].shape == (1, 1)
        assert batch["episode_step"].tolist() == [step % 10]
        assert batch["truncated"].tolist() == [float(truncated)]
        twin_obs = twin_next
        if terminated or truncated:
            obs, _ = wrapped.reset()
            twin_obs, _ = twin.reset()
            np.testing.assert_array_equal(obs, twin_obs)
    assert [b["truncated"].item() for b in source.batches].count(1.0) == 2


def test_gym_wrapper_builds_the_keys_the_source_needs_with_components_in_declared_order():
    zero = lambda b: torch.zeros(1)
    everything = FnReward(zero, None)
    env = RewardSourceWrapper(pendulum(seed=0), everything)
    env.reset()
    _, _, _, _, info = env.step(env.action_space.sample())
    batch = everything.batches[-1]
    assert set(batch) == ALL_KEYS and all(v.dtype == torch.float32 and len(v) == 1 for v in batch.values())
    names = [c.name for c in envs.reward_spec("Pendulum-v1")]
    assert batch["components"].tolist() == [[pytest.approx(info["reward_components"][n]) for n in names]]

    reordered = FnReward(zero, {"components"})
    env = RewardSourceWrapper(pendulum(seed=0), reordered, component_names=["torque_squared", "angle_squared"])
    env.reset()
    _, _, _, _, info = env.step(env.action_space.sample())
    expected = [info["reward_components"]["torque_squared"], info["reward_components"]["angle_squared"]]
    assert reordered.batches[-1]["components"].tolist() == [pytest.approx(expected)]

    plain = FnReward(zero, {"components", "env_reward"})
    env = RewardSourceWrapper(gym.make("Pendulum-v1"), plain)  # a gymnasium env that reports no components
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert plain.batches[-1]["components"].shape == (1, 0) and reward == 0.0 and info["env_reward"] < 0


def test_component_reward_with_env_weights_reproduces_env_reward_through_both_wrappers():
    from robotrl.interop import RewardVecEnvWrapper

    for env_id in ("Pendulum-v1", "CartPole-v1"):
        env = RewardSourceWrapper(envs.make(env_id, render_mode=None, seed=0), spec_weight_source(env_id))
        env.reset()
        for _ in range(30):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert reward == pytest.approx(info["env_reward"], rel=1e-5, abs=1e-5)
            if terminated or truncated:
                env.reset()

        venv = RewardVecEnvWrapper(dummy_vec(env_id, [20, 30]), spec_weight_source(env_id))
        venv.reset()
        for _ in range(40):
            _, rewards, _, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
            np.testing.assert_allclose(rewards, [i["env_reward"] for i in infos], rtol=1e-5, atol=1e-5)
            assert rewards.dtype == np.float32 and rewards.tolist() == [i["learned_reward"] for i in infos]


def test_vec_wrapper_next_obs_of_ended_episodes_is_the_terminal_observation():
    from robotrl.interop import RewardVecEnvWrapper

    source = FnReward(lambda b: b["next_obs"][:, 0], None)
    venv = RewardVecEnvWrapper(dummy_vec("Pendulum-v1", [4, 6]), source)
    obs = venv.reset()
    ends = 0
    for step in range(13):
        actions = np.array([venv.action_space.sample() for _ in range(2)])
        next_obs, rewards, dones, infos = venv.step(actions)
        batch = source.batches[-1]
        np.testing.assert_array_equal(batch["obs"].numpy(), obs)  # the reset obs after an episode ended
        np.testing.assert_allclose(batch["action"].numpy(), actions / 2, rtol=1e-6)  # Pendulum's [-2, 2] as [-1, 1]
        assert batch["episode_step"].tolist() == [step % 4, step % 6]
        assert batch["terminated"].tolist() == [0.0, 0.0] and batch["truncated"].tolist() == dones.tolist()
        np.testing.assert_allclose(batch["env_reward"].numpy(), [info["env_reward"] for info in infos], rtol=1e-6)
        assert set(batch) == ALL_KEYS and batch["components"].shape == (2, 3)
        for i in range(2):
            if dones[i]:
                ends += 1
                final = infos[i]["terminal_observation"]
                assert rewards[i] == pytest.approx(final[0]) and not np.allclose(final, next_obs[i])
                np.testing.assert_array_equal(batch["next_obs"][i].numpy(), final)
            else:
                assert rewards[i] == pytest.approx(next_obs[i][0])
        obs = next_obs
    assert ends == 3 + 2


def test_vec_wrapper_separates_termination_from_truncation():
    from robotrl.interop import RewardVecEnvWrapper

    source = FnReward(lambda b: b["terminated"] + 2 * b["truncated"], {"terminated", "truncated", "action"})
    venv = RewardVecEnvWrapper(dummy_vec("CartPole-v1", [12, 100]), source)
    venv.reset()
    kinds = set()
    for _ in range(60):
        _, rewards, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
        assert source.batches[-1]["action"].shape == (2, 1)
        for i in range(2):
            expected = 0.0 if not dones[i] else (2.0 if infos[i]["TimeLimit.truncated"] else 1.0)
            assert rewards[i] == expected
            kinds.add(expected)
    assert kinds == {0.0, 1.0, 2.0}


def test_sac_trains_on_the_learned_reward_and_stores_it_in_its_replay_buffer(one_thread, tmp_path):
    """SB3 SAC on a saved robotrl reward ensemble, loaded as a user would."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from robotrl.interop import RewardVecEnvWrapper

    class InfoLog(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.learned: list[float] = []
            self.env_rewards: list[float] = []

        def _on_step(self) -> bool:
            info = self.locals["infos"][0]
            self.learned.append(info["learned_reward"])
            self.env_rewards.append(info["env_reward"])
            return True

    from reward_learning.models import LearnedReward, RewardEnsemble, RewardModelConfig

    RewardEnsemble((3,), 1, RewardModelConfig(hidden_sizes=[16, 16])).save(tmp_path / "rm.pt")
    source = LearnedReward(RewardEnsemble.load(tmp_path / "rm.pt"))
    venv = RewardVecEnvWrapper(dummy_vec("Pendulum-v1", [50], monitor=True), source)
    model = SAC("MlpPolicy", venv, learning_starts=100, batch_size=32, buffer_size=1000, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16, 16]})
    log = InfoLog()
    model.learn(300, callback=log)
    assert model.num_timesteps == 300 and model.logger.name_to_value["train/critic_loss"] != 0

    buffer = model.replay_buffer
    stored = buffer.rewards[:300, 0]
    np.testing.assert_allclose(stored, log.learned, rtol=1e-6)
    assert not np.allclose(stored, log.env_rewards, atol=0.1)
    # SB3 stores actions scaled to [-1, 1], as robotrl's buffer does: the encoding the reward model was trained on
    batch = {"obs": buffer.observations[:300, 0], "action": buffer.actions[:300, 0],
             "next_obs": buffer.next_observations[:300, 0]}
    with torch.no_grad():
        recomputed = source({k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.items()}).numpy()
    np.testing.assert_allclose(stored, recomputed, rtol=1e-4, atol=1e-5)
    assert len(model.ep_info_buffer) == 6  # Monitor inside the VecEnv still reports env-reward episodes
    assert np.isclose(model.ep_info_buffer[0]["r"], sum(log.env_rewards[:50]), rtol=1e-4)



def test_discrete_reward_model_gets_trainer_encoded_actions_through_both_wrappers():
    """A CartPole reward ensemble (trained on [n, 1] action indices) rewards as it does on the trainer's batch."""
    from reward_learning.models import LearnedReward, RewardEnsemble, RewardModelConfig
    from robotrl.interop import RewardVecEnvWrapper

    torch.manual_seed(0)
    model = RewardEnsemble((4,), 2, RewardModelConfig(hidden_sizes=[8]), discrete_actions=True)
    source = LearnedReward(model)

    def trainer_reward(obs: np.ndarray, actions: list[int], next_obs: np.ndarray) -> np.ndarray:
        batch = {"obs": obs, "action": np.array(actions, dtype=np.float32).reshape(-1, 1), "next_obs": next_obs}
        with torch.no_grad():
            return source({k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.items()}).numpy()

    env = RewardSourceWrapper(envs.make("CartPole-v1", render_mode=None), source)
    obs, _ = env.reset(seed=0)
    for action in (0, 1, 1, 0):
        next_obs, reward, _, _, _ = env.step(action)
        assert reward == pytest.approx(trainer_reward(obs[None], [action], next_obs[None])[0], rel=1e-5)
        obs = next_obs

    venv = RewardVecEnvWrapper(dummy_vec("CartPole-v1", [100, 100]), source)
    obs = venv.reset()
    for actions in ([0, 1], [1, 1], [1, 0]):
        next_obs, rewards, _, _ = venv.step(np.array(actions))
        np.testing.assert_allclose(rewards, trainer_reward(obs, actions, next_obs), rtol=1e-5)
        obs = next_obs


def test_box_actions_reach_the_source_in_minus_one_one_through_both_wrappers():
    """Pendulum acts in [-2, 2]; robotrl-trained reward models know actions only as the agent's [-1, 1]."""
    from robotrl.interop import RewardVecEnvWrapper

    source = FnReward(lambda b: b["action"][:, 0], {"action"})
    env = RewardSourceWrapper(pendulum(seed=0), source)
    env.reset()
    rewards = [env.step(np.array([a], dtype=np.float32))[1] for a in (-2.0, -1.0, 0.0, 2.0)]
    assert rewards == pytest.approx([-1.0, -0.5, 0.0, 1.0])

    venv = RewardVecEnvWrapper(dummy_vec("Pendulum-v1", [5, 5]), source)
    venv.reset()
    _, rewards, _, _ = venv.step(np.array([[2.0], [-1.0]], dtype=np.float32))
    np.testing.assert_allclose(rewards, [1.0, -0.5])
    assert source.batches[-1]["action"].shape == (2, 1)


@pytest.mark.parametrize("kind", ["gym", "vec"])
@pytest.mark.parametrize("fn, error, match", [
    (lambda b: b["obs"][:, :1], ValueError, r"reward source 'fn' \(FnReward\) returned shape \(\d, 1\)"),
    (lambda b: b["obs"][:, 0] * float("nan"), ValueError, r"reward source 'fn' \(FnReward\) returned non-finite"),
    (lambda b: b["obs"][:, 0].tolist(), TypeError, r"reward source 'fn' \(FnReward\) returned list"),
])
def test_bad_source_output_raises_naming_the_source(kind, fn, error, match):
    if kind == "gym":
        env = RewardSourceWrapper(pendulum(seed=0), FnReward(fn, {"obs"}))
        env.reset()
        step = lambda: env.step(env.action_space.sample())
    else:
        from robotrl.interop import RewardVecEnvWrapper

        env = RewardVecEnvWrapper(dummy_vec("Pendulum-v1", [5, 5]), FnReward(fn, {"obs"}))
        env.reset()
        step = lambda: env.step(np.zeros((2, 1), dtype=np.float32))
    with pytest.raises(error, match=match):
        step()


def test_source_needing_keys_the_wrappers_do_not_build_is_rejected_up_front():
    with pytest.raises(ValueError, match=r"needs \['frames'\], which these wrappers do not provide"):
        RewardSourceWrapper(pendulum(), FnReward(lambda b: b["frames"].mean(), {"frames", "obs"}))
    with pytest.raises(RuntimeError, match="reset"):
        RewardSourceWrapper(pendulum(), FnReward(lambda b: b["obs"][:, 0], {"obs"})).step(np.zeros(1))


def test_importing_interop_does_not_need_stable_baselines3():
    code = (
        "import sys\n"
        "import robotrl.interop as interop\n"
        "assert 'stable_baselines3' not in sys.modules\n"
        "sys.modules['stable_baselines3'] = None  # as if not installed\n"
        "try:\n"
        "    interop.RewardVecEnvWrapper\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'robotrl[bench]'" in result.stdout
