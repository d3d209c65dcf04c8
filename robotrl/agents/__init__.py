"""Agents, one file each, and the name -> (config, class) table the trainer builds from."""

from robotrl.agents.base import Agent, AgentConfig
from robotrl.agents.ppo import PPO, PPOConfig
from robotrl.agents.sac import SAC, SACConfig
from robotrl.agents.td3 import TD3, TD3Config

AGENTS: dict[str, type[Agent]] = {"sac": SAC, "td3": TD3, "ppo": PPO}

__all__ = ["AGENTS", "PPO", "SAC", "TD3", "Agent", "AgentConfig", "PPOConfig", "SACConfig", "TD3Config"]
