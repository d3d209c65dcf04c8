"""QR-DQN (Dabney et al. 2017): DQN whose head predicts M fixed quantiles of the return for every action.

The quantile fractions are the midpoints (2i + 1) / 2M; the loss is the quantile Huber loss between the M predicted
quantiles of the taken action and the M target atoms r + gamma * Z_target(s', a*). Actions are scored by the mean of
their quantiles. The DQN machinery (epsilon schedule, target network, double-Q, update) is `DistributionalDQN`'s.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from robotrl.agents.dqn_base import DistributionalDQN, DQNConfig
from robotrl.core.networks import mlp
from robotrl.core.quantile import midpoint_taus


class QRDQNConfig(DQNConfig):
    """QR-DQN hyper-parameters (sb3-contrib defaults: 200 quantiles)."""

    name: Literal["qrdqn"] = "qrdqn"
    num_quantiles: int = Field(200, ge=1, description="M, the fixed quantiles predicted per action")


class QRDQN(DistributionalDQN):
    """QR-DQN for discrete actions."""

    config: QRDQNConfig
    fixed_taus = True

    def __init__(self, obs_dim: int, num_actions: int, config: QRDQNConfig, device: torch.device) -> None:
        super().__init__(obs_dim, num_actions, config, device)
        self.taus = midpoint_taus(config.num_quantiles, device)

    def make_net(self) -> nn.Module:
        c = self.config
        return mlp(self.obs_dim, c.hidden_sizes, self.action_dim * c.num_quantiles, c.activation)

    def quantiles(self, net: nn.Module, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        """The head's M outputs per action (its fractions are always the fixed `self.taus`)."""
        return net(obs).view(obs.shape[0], self.config.num_quantiles, self.action_dim)

    def train_taus(self, batch_size: int) -> torch.Tensor:
        return self.taus

    target_taus = policy_taus = train_taus
