"""The training loop: time-limit bootstrapping, NaN handling, resume, determinism, reward sources, logging."""

from __future__ import annotations

import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from reward_learning import RewardSource
from robotrl.core import checkpoint as ckpt
from robotrl.logger import read_metrics
from robotrl.policy import load_policy
from robotrl.spaces import ActionAdapter
from robotrl.trainer import CHECKPOINT, Trainer, TrainingDiverged


def comparable(records: list[dict]) -> list[dict]:
    """Metrics records without wall-clock dependent values."""
    return [{k: v for k, v in r.items() if k != "wall_time" and not k.startswith("time/")} for r in records]


def assert_state_finite(module_state: dict) -> None:
    for key, value in module_state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all(), key


# ---------------------------------------------------------------------------------------- truncation vs termination
def test_time_limit_truncation_is_stored_with_true_final_obs_and_no_termination(tiny_config, tmp_path):
    config = tiny_config("sac", train={"total_steps": 450, "checkpoint_every": 1000})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    s = {k: v.cpu().numpy() for k, v in trainer.buffer.storage.items()}
    n = len(trainer.buffer)
    assert n == 450
    assert np.flatnonzero(s["truncated"][:n]).tolist() == [199, 399]  # Pendulum's 200-step limit
    assert not s["terminated"][:n].any()
    ends = {199, 399}
    # within an episode next_obs is the following row's obs; at a time limit it is not (that row starts a new episode)
    for t in range(n - 1):
        if t in ends:
            assert not np.allclose(s["next_obs"][t], s["obs"][t + 1])
        else:
            np.testing.assert_array_equal(s["next_obs"][t], s["obs"][t + 1])
    assert s["episode_step"][:n].tolist() == [t % 200 for t in range(n)]

    # replay the first two episodes with the stored actions: next_obs of the truncated step is the real final state
    env = envs.make("Pendulum-v1", render_mode=None)
    adapter = ActionAdapter.from_space(env.action_space)
    obs, _ = env.reset(seed=config.seed)
    for t in range(400):
        if t == 200:
            obs, _ = env.reset()
        np.testing.assert_allclose(s["obs"][t], obs, atol=1e-6)
        obs, reward, terminated, truncated, _ = env.step(adapter.to_env(s["action"][t]))
        np.testing.assert_allclose(s["next_obs"][t], obs, atol=1e-6)
        assert s["env_reward"][t] == pytest.approx(reward, abs=1e-4)
        assert truncated == (t in ends) and not terminated
    env.close()
    np.testing.assert_allclose(s["reward"][:n], s["env_reward"][:n])  # the default source is the env reward


def test_configured_time_limit_applies_to_training_and_evaluation(tiny_config, tmp_path):
    config = tiny_config("sac", ["algo.learning_starts=1000", "env.max_episode_steps=50"],
                         train={"total_steps": 120, "eval_episodes": 2})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    result = trainer.train()
    s = trainer.buffer.storage
    assert torch.flatten(torch.nonzero(s["truncated"][:120])).tolist() == [49, 99]
    assert s["terminated"][:120].sum() == 0 and trainer.episodes == 2
    assert result.final_eval["eval/length"] == 50


class CountingEnv(gym.Env):
    """obs = [k / 10, 1] after k steps of the episode, reward 1 per step; odd-numbered episodes terminate after 3
    steps, even-numbered ones run into the time limit (5 steps by default)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.episode, self.k = -1, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.k / 10.0, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.k = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.k += 1
        return self._obs(), 1.0, self.episode % 2 == 1 and self.k == 3, False, {}


def make_counting_env(*, render_mode, width, height, camera, max_episode_steps, **kwargs):
    return gym.wrappers.TimeLimit(CountingEnv(), max_episode_steps or 5)


class CountingTerms(envs.RewardTerms):
    def __init__(self, env):
        super().__init__(env)
        self.spec = (envs.RewardComponent("alive", 1.0, "maximize", "1 per step"),)

    def values(self, action, terminated, info):
        return [1.0]


@pytest.fixture(scope="module")
def counting_env_id() -> str:
    envs.register("TestCounting-v0", make_counting_env, CountingTerms, description="test env", overwrite=True)
    return "TestCounting-v0"


def test_ppo_bootstraps_truncated_steps_with_value_of_final_obs(counting_env_id, tiny_config, tmp_path):
    gamma = 0.9
    config = tiny_config("ppo", env_id=counting_env_id, algo={"num_steps": 16, "minibatch_size": 16, "epochs": 1,
                                                              "gamma": gamma},
                         train={"total_steps": 16})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    agent = trainer.agent
    with torch.no_grad():
        agent.value_net[-1].bias.fill_(3.0)  # make V clearly non-zero
    captured = {}
    original_update = agent.update

    def capture(rollout):
        captured.update(rewards=rollout.rewards[:, 0].clone(), dones=rollout.dones[:, 0].clone(),
                        obs=rollout.obs[:, 0].clone())
        final, reset = torch.tensor([[0.5, 1.0]]), torch.tensor([[0.0, 1.0]])
        captured.update(v_final=agent.value(final).item(), v_reset=agent.value(reset).item())
        return original_update(rollout)

    agent.update = capture
    trainer.train()
    # episodes: 5 steps truncated (t=0..4), 3 terminated (5..7), 5 truncated (8..12), 3 terminated (13..15)
    truncated_at, terminated_at = [4, 12], [7, 15]
    assert torch.flatten(torch.nonzero(captured["dones"])).tolist() == sorted(truncated_at + terminated_at)
    assert captured["obs"][:, 0].tolist() == pytest.approx([0, .1, .2, .3, .4, 0, .1, .2, 0, .1, .2, .3, .4, 0, .1, .2])
    expected = torch.ones(16)
    expected[truncated_at] += gamma * captured["v_final"]
    assert abs(captured["v_final"] - captured["v_reset"]) > 1e-3  # bootstrapping from the reset obs would differ
    torch.testing.assert_close(captured["rewards"], expected)


def test_vector_envs_step_counting_and_episode_stats(counting_env_id, tiny_config, tmp_path):
    config = tiny_config("ppo", env_id=counting_env_id, env={"num_envs": 2},
                         algo={"num_steps": 8, "minibatch_size": 16, "epochs": 1},
                         train={"total_steps": 32, "log_every": 1})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    result = trainer.train()
    assert result.steps == 32 and trainer.step == 32
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    lengths = [r["train/episode_length"] for r in records if "train/episode_length" in r]
    returns = [r["train/episode_return"] for r in records if "train/episode_return" in r]
    assert lengths == returns and set(lengths) == {3.0, 5.0}
    assert trainer.episodes == len(lengths) == 2 * 4  # 16 steps per env: episodes of 5, 3, 5, (3 = steps 14..16)
    assert result.final_eval["eval/length"] == 5.0


# ----------------------------------------------------------------------------------------------------- NaN / inf
class FlakyReward(RewardSource):
    """The env reward for `good_calls` vector steps, then NaN."""

    name = "flaky-test-reward"

    def __init__(self, good_calls: int) -> None:
        self.good_calls, self.calls = good_calls, 0

    def __call__(self, batch):
        self.calls += 1
        reward = batch["env_reward"].clone()
        if self.calls > self.good_calls:
            reward[:] = float("nan")
        return reward


def test_nan_reward_stops_training_naming_the_source_and_keeps_last_checkpoint(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("sac", train={"total_steps": 1000, "checkpoint_every": 100})
    trainer = Trainer(config, run_dir=run, reward_source=FlakyReward(250), progress=False)
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    message = str(info.value)
    assert "flaky-test-reward" in message and "NaN" in message and "step 250" in message
    assert str(run / CHECKPOINT) in message
    state = ckpt.load(run / CHECKPOINT)
    assert state["step"] == 200
    assert_state_finite(state["agent"]["modules"])
    assert torch.isfinite(state["buffer"]["storage"]["reward"]).all() and state["buffer"]["size"] == 200
    policy = load_policy(run, device="cpu")
    assert policy.step == 200
    assert np.isfinite(policy.act(np.zeros(3, dtype=np.float32))).all()
    for record in read_metrics(run / "metrics.jsonl"):
        assert all(math.isfinite(v) for v in record.values())
        assert record["step"] <= 250


def test_nan_reward_through_cli_exits_3(tiny_raw, tmp_path, capsys, monkeypatch):
    import yaml

    from robotrl import trainer as trainer_module
    from robotrl.cli import main

    monkeypatch.setattr(trainer_module, "build_reward_source", lambda *args: FlakyReward(120))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_raw("sac", train={"total_steps": 1000})))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "flaky-test-reward" in err and "Traceback" not in err


def test_diverging_learner_stops_and_keeps_checkpoint_from_before(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("sac", ["algo.critic_lr=1e30", "algo.learning_starts=250"],
                         train={"total_steps": 2000, "checkpoint_every": 100, "log_every": 10})
    trainer = Trainer(config, run_dir=run, progress=False)
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    message = str(info.value)
    assert "NaN/inf" in message and ("loss" in message or "parameters" in message)
    assert f"step {trainer.step}" in message and "last good checkpoint" in message
    assert trainer.step < 2000
    state = ckpt.load(run / CHECKPOINT)
    assert state["step"] < trainer.step and state["step"] == 200
    assert_state_finite(state["agent"]["modules"])
    assert_state_finite(state["agent"]["optimizers"]["critic"]["state"].get(0, {}))
    # the checkpoint still resumes
    resumed = Trainer.resume(run, progress=False)
    assert resumed.step == 200 and len(resumed.buffer) == 200
    resumed.vec.close()


def test_save_checkpoint_refuses_nan_parameters(tiny_config, tmp_path):
    trainer = Trainer(tiny_config("sac"), run_dir=tmp_path / "run", progress=False)
    trainer.save_checkpoint()
    good = (tmp_path / "run" / CHECKPOINT).read_bytes()
    with torch.no_grad():
        trainer.agent.critic.layers[0].weight[0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="parameters contain NaN/inf"):
        trainer.save_checkpoint()
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == good
    trainer.vec.close()


# ---------------------------------------------------------------------------------------------------- resume
def test_resume_continues_from_half_way_with_intact_buffer(tiny_config, tmp_path):
    full_cfg = tiny_config("sac", train={"total_steps": 800, "checkpoint_every": 200})
    full = Trainer(full_cfg, run_dir=tmp_path / "full", progress=False)
    full.train()

    half_cfg = tiny_config("sac", train={"total_steps": 400, "checkpoint_every": 200})
    half = Trainer(half_cfg, run_dir=tmp_path / "half", progress=False)
    assert half.train().steps == 400

    saved = ckpt.load(tmp_path / "half" / CHECKPOINT)
    resumed = Trainer.resume(tmp_path / "half", progress=False, overrides=("train.total_steps=800",))
    assert resumed.step == resumed.start_step == 400 and resumed.episodes == 2
    # the random generators continue from the checkpoint, not from a fresh seed
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert np.array_equal(np.random.get_state()[1], saved["rng"]["numpy"][1])
    assert resumed.rng.bit_generator.state == saved["np_rng"]
    assert resumed.config.train.total_steps == 800
    assert len(resumed.buffer) == 400 and resumed.buffer.pos == 400 and resumed.buffer.total_added == 400
    for key, value in half.buffer.storage.items():
        assert torch.equal(resumed.buffer.storage[key][:400], value[:400]), key
        # before the stop, both runs collected exactly the same transitions (same seed)
        assert torch.equal(full.buffer.storage[key][:400], value[:400]), key
    assert resumed.agent.num_updates == half.agent.num_updates == 301
    for key, value in half.agent.state_dict().items():
        assert torch.equal(resumed.agent.state_dict()[key], value), key
    assert list(resumed.recent_returns) == list(half.recent_returns)

    result = resumed.train()
    assert result.steps == 800 and resumed.episodes == 4 and len(resumed.buffer) == 800
    assert resumed.agent.num_updates == 701
    for key, value in half.buffer.storage.items():
        assert torch.equal(resumed.buffer.storage[key][:400], value[:400]), key
    assert "total_steps: 800" in (tmp_path / "half" / "config.yaml").read_text()
    records = read_metrics(tmp_path / "half" / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == 800
    episode_steps = [r["step"] for r in records if "train/episode_return" in r]
    assert episode_steps == [200, 400, 600, 800]
    assert ckpt.load(tmp_path / "half" / CHECKPOINT)["step"] == 800


def test_resume_without_checkpoint_starts_from_scratch(tiny_config, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 100}), run_dir=run, progress=False).train()
    (run / CHECKPOINT).unlink()
    trainer = Trainer.resume(run, progress=False)
    assert trainer.step == 0 and len(trainer.buffer) == 0
    trainer.vec.close()


def test_resume_from_an_unreadable_checkpoint_says_what_to_do(tiny_config, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("sac", train={"total_steps": 150}), run_dir=run, progress=False).train()
    with pytest.raises(ckpt.CheckpointError, match="another robotrl version or for another config"):
        Trainer.resume(run, progress=False, overrides=("algo.hidden_sizes=[16,16]",))  # other network shapes
    state = ckpt.load(run / CHECKPOINT)
    del state["agent"]["num_updates"]  # an older format without a field this version reads
    ckpt.atomic_save(state, run / CHECKPOINT)
    with pytest.raises(ckpt.CheckpointError, match="KeyError"):
        Trainer.resume(run, progress=False)


# ----------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_same_seed_gives_identical_metrics_and_parameters(algo, tiny_config, tmp_path):
    train = {"total_steps": 400 if algo == "sac" else 512, "log_every": 50 if algo == "sac" else 128,
             "eval_every": 200 if algo == "sac" else 256}
    runs = []
    for name in ("a", "b"):
        config = tiny_config(algo, env={"num_envs": 1 if algo == "sac" else 2}, train=train)
        trainer = Trainer(config, run_dir=tmp_path / name, progress=False)
        trainer.train()
        runs.append(trainer)
    a, b = (comparable(read_metrics(tmp_path / name / "metrics.jsonl")) for name in ("a", "b"))
    assert len(a) > 5 and any("eval/return" in r for r in a) and any(k.startswith("train/") and "loss" in k
                                                                       for r in a for k in r)
    assert a == b
    for key, value in runs[0].agent.state_dict().items():
        assert torch.equal(runs[1].agent.state_dict()[key], value), key


def test_different_seeds_give_different_runs(tiny_config, tmp_path):
    records = []
    for seed in (0, 1):
        config = tiny_config("sac", [f"seed={seed}"], train={"total_steps": 200})
        Trainer(config, run_dir=tmp_path / str(seed), progress=False).train()
        records.append(comparable(read_metrics(tmp_path / str(seed) / "metrics.jsonl")))
    assert records[0] != records[1]


# ------------------------------------------------------------------------------------------------ reward sources
def test_component_reward_source_trains_on_the_weighted_component(tiny_config, tmp_path):
    config = tiny_config("sac", reward={"source": "components", "weights": {"angle_squared": -2.0}},
                         train={"total_steps": 300})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    assert trainer.component_names == ["angle_squared", "angular_velocity_squared", "torque_squared"]
    result = trainer.train()
    assert result.steps == 300 and trainer.agent.num_updates == 201
    s = trainer.buffer.storage
    torch.testing.assert_close(s["reward"][:300], -2.0 * s["components"][:300, 0])
    assert not torch.allclose(s["reward"][:300], s["env_reward"][:300])
    # evaluation still reports the env's own reward
    assert result.final_eval["eval/return"] < 0


def test_unknown_component_weight_in_config_is_a_clear_error(tiny_config, tmp_path):
    config = tiny_config("sac", reward={"source": "components", "weights": {"angle": -1.0}})
    with pytest.raises(ValueError, match="angle_squared"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)


# ------------------------------------------------------------------------------------------------------ logging
def test_run_directory_contents_with_tensorboard(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = tiny_config("sac", logging={"tensorboard": True}, train={"total_steps": 200, "eval_every": 100})
    result = Trainer(config, run_dir=run, progress=False).train()
    assert result.run_dir == run and result.steps == 200
    assert set(result.final_eval) >= {"eval/return", "eval/return_std", "eval/length"}
    assert (run / "config.yaml").exists() and (run / CHECKPOINT).exists()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if "eval/return" in r] == [100, 200]  # no repeated final eval
    assert not list(run.glob(".checkpoint.pt.*"))  # no temporary files left behind by atomic saves


def test_default_run_dir_is_under_runs_dir(tiny_config, tmp_path):
    result = Trainer(tiny_config("sac", train={"total_steps": 100}), progress=False).train()
    assert result.run_dir.parent == tmp_path / "runs" and result.run_dir.name.startswith("tiny-sac-")


def test_wandb_offline_run_writes_inside_run_dir(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    config = tiny_config("sac", logging={"wandb": {"mode": "offline", "project": "robotrl-tests"}},
                         train={"total_steps": 100})
    start = time.monotonic()
    Trainer(config, run_dir=run, progress=False).train()
    assert time.monotonic() - start < 60
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))


def test_wandb_online_without_server_falls_back_to_offline(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import robotrl.logger

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # loopback port with nothing listening
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(robotrl.logger, "WANDB_INIT_TIMEOUT", 10)
    run = tmp_path / "run"
    config = tiny_config("sac", logging={"wandb": {"mode": "online", "project": "robotrl-tests"}},
                         train={"total_steps": 100})
    start = time.monotonic()
    with pytest.warns(UserWarning, match="offline"):
        Trainer(config, run_dir=run, progress=False).train()
    assert time.monotonic() - start < 60
    assert list((run / "wandb").glob("offline-run-*"))


def test_preference_runs_read_the_time_limit_of_envs_without_a_gymnasium_spec():
    # highway-env and Meta-World keep their own limits; the config no longer has to repeat them
    from robotrl.config import load_config
    from robotrl.trainer import episode_limit

    config = load_config(None, base={"name": "t", "env": {"id": "highway/highway-fast-v0"}, "algo": {"name": "sac"}})
    assert episode_limit(config) == 30
    config = load_config(None, base={"name": "t", "env": {"id": "metaworld/reach-v3"}, "algo": {"name": "sac"}})
    assert episode_limit(config) == 500


@pytest.mark.parametrize(("eval_every", "saved_steps"), [(150, [150, 300]), (0, [150, 300, 300])])
def test_the_final_checkpoint_is_written_once_unless_the_final_evaluation_changed_it(tiny_config, tmp_path,
                                                                                      monkeypatch, eval_every,
                                                                                      saved_steps):
    saves = []
    original = ckpt.atomic_save
    monkeypatch.setattr(ckpt, "atomic_save", lambda state, path: saves.append(state["step"]) or original(state, path))
    config = tiny_config("sac", train={"total_steps": 300, "checkpoint_every": 150, "eval_every": eval_every})
    result = Trainer(config, run_dir=tmp_path / "run", progress=False).train()
    assert saves == saved_steps
    assert ckpt.load(tmp_path / "run" / CHECKPOINT, torch.device("cpu"))["last_eval"] == result.final_eval
