"""Agents, one file each, and the name -> (config, class) tables the trainer and the config schema build from."""

from robotrl.agents.base import Agent, AgentConfig
from robotrl.agents.ensemble_iqn import EnsembleIQN, EnsembleIQNConfig
from robotrl.agents.iqn import IQN, IQNConfig
from robotrl.agents.ppo import PPO, PPOConfig
from robotrl.agents.pr_iqn import PrIQN, PrIQNConfig
from robotrl.agents.qrdqn import QRDQN, QRDQNConfig
from robotrl.agents.sac import SAC, SACConfig
from robotrl.agents.td3 import TD3, TD3Config
from robotrl.agents.tqc import TQC, TQCConfig

AGENTS: dict[str, type[Agent]] = {"sac": SAC, "td3": TD3, "ppo": PPO, "tqc": TQC, "qrdqn": QRDQN, "iqn": IQN,
                                  "pr_iqn": PrIQN, "ensemble_iqn": EnsembleIQN}
AGENT_CONFIGS: dict[str, type[AgentConfig]] = {"sac": SACConfig, "td3": TD3Config, "ppo": PPOConfig, "tqc": TQCConfig,
                                                 "qrdqn": QRDQNConfig, "iqn": IQNConfig, "pr_iqn": PrIQNConfig,
                                                 "ensemble_iqn": EnsembleIQNConfig}

__all__ = ["AGENTS", "AGENT_CONFIGS", "IQN", "PPO", "QRDQN", "SAC", "TD3", "TQC", "Agent", "AgentConfig",
           "EnsembleIQN", "EnsembleIQNConfig", "IQNConfig", "PPOConfig", "PrIQN", "PrIQNConfig", "QRDQNConfig",
           "SACConfig", "TD3Config", "TQCConfig"]
