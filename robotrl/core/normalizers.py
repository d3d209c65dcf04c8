"""Running mean/std normalisers for observations and rewards; nn.Modules so their stats live in checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from reward_learning.normalizers import RunningMeanStd

__all__ = ["ReturnScaler", "RunningMeanStd"]


class ReturnScaler(nn.Module):
    """Scales rewards by the running std of the discounted return (the VecNormalize rule), per env."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.stats = RunningMeanStd((), clip=clip)
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))

    @torch.no_grad()
    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Update with this step's rewards and return the scaled rewards; `done` resets each env's return."""
        self.returns.mul_(self.gamma).add_(reward.to(torch.float64))
        self.stats.update(self.returns)
        self.returns.mul_(1.0 - done.to(torch.float64))
        std = torch.sqrt(self.stats.var + self.epsilon).to(reward.dtype)
        return torch.clamp(reward / std, -self.clip, self.clip)
