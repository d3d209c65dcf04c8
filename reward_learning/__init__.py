"""Reward models, teachers, labels and reward comparison; knows rewards, not agents or simulators."""

from reward_learning.sources import ComponentReward, EnvReward, RewardSource, Transitions

__all__ = ["ComponentReward", "EnvReward", "RewardSource", "Transitions"]
