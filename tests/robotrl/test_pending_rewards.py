"""`reward.source: code` scored in batches: the same buffer rewards and PPO rollouts as per-step scoring with far
fewer sandbox calls, no update on a placeholder reward, and a stopped run that saves and resumes scored rewards."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from test_kill_resume import CHECKPOINT_EVERY, sigterm_between_checkpoints, start_training

from robotrl.config import ConfigError
from robotrl.core import checkpoint as ckpt
from robotrl.trainer import CHECKPOINT, Trainer

# Pendulum's own reward, rebuilt from its declared components: the code reward must reproduce the env reward
ENV_REWARD = '''
def compute_dense_reward(obs, action, next_obs, angle_squared, angular_velocity_squared, torque_squared):
    return -(angle_squared + 0.1 * angular_velocity_squared + 0.001 * torque_squared)
'''
WEIGHTS = torch.tensor([1.0, 0.1, 0.001])


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "pendulum_reward.py"
    path.write_text(ENV_REWARD)
    return path


def code_reward(components: torch.Tensor) -> torch.Tensor:
    return -(components @ WEIGHTS)


def sac_config(tiny_config, reward_file, score_every: str, **algo):
    return tiny_config("sac", env={"id": "Pendulum-v1", "num_envs": 2},
                       reward={"source": "code", "code": {"path": str(reward_file), "batch_size": 64,
                                                          "score_every": score_every}},
                       algo={"learning_starts": 100, "train_every": 50, "gradient_steps": 5, **algo},
                       train={"total_steps": 400, "checkpoint_every": 300, "log_every": 100})


def test_batched_sac_run_matches_per_step_scoring_with_fewer_sandbox_calls(tiny_config, reward_file, tmp_path):
    trainers = {}
    for score_every in ("step", "batch"):
        trainer = Trainer(sac_config(tiny_config, reward_file, score_every), run_dir=tmp_path / score_every,
                          progress=False)
        trainer.train()
        trainers[score_every] = trainer
    per_step, batched = (trainers[k].buffer.storage for k in ("step", "batch"))
    assert torch.equal(per_step["reward"], batched["reward"])
    assert torch.equal(per_step["obs"], batched["obs"])  # the agents trained on the same rewards
    torch.testing.assert_close(batched["reward"][:400], batched["env_reward"][:400], atol=1e-4, rtol=1e-5)
    assert trainers["step"].rewarder.calls == 200  # one call per vector step of 2 envs
    assert trainers["batch"].rewarder.calls <= 12 and trainers["batch"].rewarder.rows_scored == 400
    logged = [json.loads(line) for line in (tmp_path / "batch" / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("reward_code/rows_scored", 0) > 0 for row in logged)


def test_no_update_samples_a_placeholder_reward(tiny_config, reward_file, tmp_path, monkeypatch):
    trainer = Trainer(sac_config(tiny_config, reward_file, "batch", train_every=25),
                      run_dir=tmp_path / "run", progress=False)
    original = trainer.agent.update
    updates = []

    def checked_update(batch):
        assert not trainer.rewarder._pending, "an update ran while rewards were still unscored"
        torch.testing.assert_close(batch.reward, code_reward(batch.components), atol=1e-5, rtol=0)
        updates.append(trainer.step)
        return original(batch)

    monkeypatch.setattr(trainer.agent, "update", checked_update)
    trainer.train()
    assert len(updates) == 13 * 5  # a round of 5 updates every 25 steps from step 100 to 400


def ppo_rollouts(tiny_config, tmp_path, monkeypatch, name: str, reward: dict) -> tuple[Trainer, list[torch.Tensor]]:
    """A short PPO run on Pendulum (time limit 50: a bootstrap in every rollout, reward and observation scaling on);
    returns the trainer and the rewards of every rollout the agent was updated on."""
    config = tiny_config("ppo", env={"id": "Pendulum-v1", "num_envs": 2, "max_episode_steps": 50}, reward=reward,
                         algo={"normalize_reward": True, "normalize_obs": True},
                         train={"total_steps": 512, "checkpoint_every": 1000, "log_every": 128})
    trainer = Trainer(config, run_dir=tmp_path / name, progress=False)
    original, rollouts = trainer.agent.update, []

    def recording_update(rollout):
        rollouts.append(rollout.rewards.clone())
        return original(rollout)

    monkeypatch.setattr(trainer.agent, "update", recording_update)
    trainer.train()
    return trainer, rollouts


def test_ppo_rollouts_scored_once_per_rollout_hold_the_per_step_numbers(tiny_config, reward_file, tmp_path,
                                                                        monkeypatch):
    runs = {mode: ppo_rollouts(tiny_config, tmp_path, monkeypatch, mode,
                               {"source": "code", "code": {"path": str(reward_file), "score_every": mode}})
            for mode in ("step", "batch")}
    (per_step, step_rollouts), (batched, batch_rollouts) = runs["step"], runs["batch"]
    assert len(batch_rollouts) == 4
    for step_rewards, batch_rewards in zip(step_rollouts, batch_rollouts, strict=True):
        assert torch.equal(step_rewards, batch_rewards)
    assert per_step.rewarder.calls == 256 and batched.rewarder.calls == 4
    # and they are the env's rewards, scaled and bootstrapped the same way (the first rollout: before any update)
    _, env_rollouts = ppo_rollouts(tiny_config, tmp_path, monkeypatch, "env", {"source": "env"})
    torch.testing.assert_close(batch_rollouts[0], env_rollouts[0], atol=1e-4, rtol=1e-5)


def test_batching_settings_are_validated(tiny_config, reward_file, tmp_path):
    with pytest.raises(ConfigError, match="reward.code.batch_size"):
        tiny_config("sac", reward={"source": "code", "code": {"path": str(reward_file), "batch_size": 0}})
    with pytest.raises(ConfigError, match="reward.code.score_every"):
        tiny_config("sac", reward={"source": "code", "code": {"path": str(reward_file), "score_every": "episode"}})
    config = tiny_config("sac", reward={"source": "code", "code": {"path": str(reward_file)}},
                         algo={"buffer_size": 200})
    with pytest.raises(ConfigError, match=r"algo.buffer_size \(200\) must hold .* reward.code.batch_size"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_saves_scored_rewards_and_the_run_resumes(tiny_raw, reward_file, tmp_path, headless_env):
    run, metrics, process = start_training(tiny_raw, tmp_path, headless_env, 20_000, text=True,
                                           reward={"source": "code", "code": {"path": str(reward_file)}},
                                           algo={"train_every": 50})  # rows wait up to 50 steps for a flush
    sigterm_between_checkpoints(run, metrics, process)
    state = ckpt.load(run / CHECKPOINT)
    saved = state["buffer"]["storage"]
    # a signal between storing a transition and counting its step leaves one extra row (a known window)
    assert state["step"] % CHECKPOINT_EVERY != 0 and state["buffer"]["size"] - state["step"] in (0, 1)
    torch.testing.assert_close(saved["reward"], code_reward(saved["components"]), atol=1e-5, rtol=0)

    resumed = Trainer.resume(run, progress=False, overrides=(f"train.total_steps={state['step'] + 200}",))
    resumed.train()
    stored, size = resumed.buffer.storage, len(resumed.buffer)
    assert size == state["buffer"]["size"] + 200
    torch.testing.assert_close(stored["reward"][:size], code_reward(stored["components"][:size]), atol=1e-5, rtol=0)
