"""Evaluation reports eval/success_rate for every env that defines success, also when no episode succeeded."""

from __future__ import annotations

import torch

import envs
from robotrl.agents import SAC, SACConfig
from robotrl.evaluation import evaluate
from robotrl.spaces import ActionAdapter


def summary_of(env_id: str) -> dict[str, float]:
    """Two short evaluation episodes of an untrained SAC agent."""
    env = envs.make(env_id, render_mode=None, max_episode_steps=10)
    adapter = ActionAdapter.from_space(env.action_space)
    device = torch.device("cpu")
    agent = SAC(env.observation_space.shape[0], adapter.action_dim, SACConfig(), device)
    try:
        return evaluate(agent, env, adapter, episodes=2, seed=0, device=device).summary()
    finally:
        env.close()


def test_success_rate_is_logged_when_it_is_zero():
    assert summary_of("metaworld/reach-v3")["eval/success_rate"] == 0.0  # 10 steps cannot cover ~0.2 m to the goal


def test_no_success_rate_for_envs_without_success():
    assert "eval/success_rate" not in summary_of("Pendulum-v1")
