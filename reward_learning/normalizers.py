"""A running mean/std tracker (an nn.Module, so its statistics live in checkpoints and state dicts).

It lives in `reward_learning` because reward code needs it too (e.g. the state-entropy reward) and `reward_learning`
may not import `robotrl`; `robotrl.core.normalizers` re-exports it next to the agents' other normalisers.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Tracks mean and variance of a stream with the parallel (Chan et al.) update; `normalize` clips the result."""

    def __init__(self, shape: tuple[int, ...] = (), clip: float = 10.0, epsilon: float = 1e-8,
                 prior_count: float = 1e-4) -> None:
        """`prior_count`: weight of the initial (mean 0, var 1) guess; 0 gives the exact statistics of the data."""
        super().__init__()
        self.clip, self.epsilon = clip, epsilon
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(float(prior_count), dtype=torch.float64))

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
