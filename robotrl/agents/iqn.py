"""Implicit Quantile Networks (Dabney et al. 2018): a network that returns the quantile at any fraction tau.

The state features psi(s) are multiplied elementwise with an embedding of tau, phi(tau) = ReLU(W cos(pi i tau) + b)
for i = 0..n-1 (n = 64), and a small head maps the product to one quantile per action. Training samples N fractions
for the prediction and N' for the target atoms; acting scores each action by its mean over K sampled fractions while
training, and over K fixed midpoint fractions in eval mode (`agent.eval()`, as evaluation sets it), so evaluations
are deterministic and draw nothing from the global RNG that training uses.
Drawing those K fractions from [0, alpha] instead of [0, 1] scores actions by their CVaR at level alpha, a
risk-averse policy (`cvar_alpha`). The DQN machinery is `DistributionalDQN`'s.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from robotrl.agents.dqn_base import DistributionalDQN, DQNConfig
from robotrl.core.networks import activation, mlp
from robotrl.core.quantile import midpoint_taus


class IQNConfig(DQNConfig):
    """IQN hyper-parameters (Dopamine: embedding 64, N = N' = 64, K = 32, kappa 1)."""

    name: Literal["iqn"] = "iqn"
    hidden_sizes: list[int] = Field(default_factory=lambda: [256, 256], min_length=2,
                                    description="state torso widths, then the head's hidden width after the merge")
    embedding_dim: int = Field(64, gt=0, description="n, cosine features of tau")
    num_tau_samples: int = Field(64, gt=0, description="N, fractions of the predicted quantiles per transition")
    num_target_samples: int = Field(64, gt=0, description="N', fractions of the target atoms per transition")
    num_policy_samples: int = Field(32, gt=0, description="K, fractions that score an action")
    cvar_alpha: float = Field(1.0, gt=0.0, le=1.0, description="score actions by CVaR at this level "
                              "(fractions drawn from [0, alpha]); 1 = risk-neutral mean")


class TauEmbedding(nn.Module):
    """phi(tau) = ReLU(Linear(cos(pi * i * tau), i = 0..n-1)): [..., T] fractions -> [..., T, out_dim]."""

    def __init__(self, embedding_dim: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", math.pi * torch.arange(embedding_dim, dtype=torch.float32))
        self.linear = nn.Linear(embedding_dim, out_dim)

    def features(self, taus: torch.Tensor) -> torch.Tensor:
        """The cosine features cos(pi * i * tau), [..., T, n]."""
        return torch.cos(taus.unsqueeze(-1) * self.frequencies)

    def forward(self, taus: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(self.features(taus)))


class ImplicitQuantileNet(nn.Module):
    """Z(s, tau) for every action: head(psi(s) * phi(tau)) -> [batch, T, num_actions].

    `head` replaces the default MLP head (input [batch, T, hidden[-2]]), e.g. one head per reward objective."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], act: str, embedding_dim: int,
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.torso = nn.Sequential(*mlp(obs_dim, hidden[:-2], hidden[-2], act), activation(act)())
        self.embedding = TauEmbedding(embedding_dim, hidden[-2])
        self.head = head if head is not None else mlp(hidden[-2], hidden[-1:], num_actions, act)

    def forward(self, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs).unsqueeze(1) * self.embedding(taus))


class IQN(DistributionalDQN):
    """IQN for discrete actions, optionally risk-averse (CVaR) when acting."""

    config: IQNConfig

    def make_net(self) -> nn.Module:
        c = self.config
        return ImplicitQuantileNet(self.obs_dim, self.action_dim, c.hidden_sizes, c.activation, c.embedding_dim)

    def quantiles(self, net: nn.Module, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        return net(obs, taus.expand(obs.shape[0], -1))

    def sample_taus(self, batch_size: int, count: int, upper: float = 1.0) -> torch.Tensor:
        """[batch, count] fractions drawn uniformly from [0, upper)."""
        return upper * torch.rand(batch_size, count, device=self.device)

    def train_taus(self, batch_size: int) -> torch.Tensor:
        return self.sample_taus(batch_size, self.config.num_tau_samples)

    def target_taus(self, batch_size: int) -> torch.Tensor:
        return self.sample_taus(batch_size, self.config.num_target_samples)

    def policy_taus(self, batch_size: int) -> torch.Tensor:
        c = self.config
        if not self.training:
            return c.cvar_alpha * midpoint_taus(c.num_policy_samples, self.device)
        return self.sample_taus(batch_size, c.num_policy_samples, c.cvar_alpha)
