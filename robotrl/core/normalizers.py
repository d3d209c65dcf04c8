"""Running mean/std normalisers for observations and rewards; nn.Modules so their stats live in checkpoints."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Tracks mean and variance of a stream with the parallel (Chan et al.) update; `normalize` clips the result."""

    def __init__(self, shape: tuple[int, ...] = (), clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.epsilon = clip, epsilon
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch (leading axis = samples) into the running statistics."""
        x = x.to(self.mean.device, torch.float64).reshape(-1, *self.mean.shape)
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total) / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + self.epsilon).to(x.dtype)
        return torch.clamp((x - self.mean.to(x.dtype)) / std, -self.clip, self.clip)


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
