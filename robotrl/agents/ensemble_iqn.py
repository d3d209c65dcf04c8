"""Ensemble IQN: E independently initialised IQN networks on the scalar reward, acting on their mean.

The Pr-MOMDP paper names an "ensemble-IQN" baseline without specifying it, so this is OUR definition: E complete
IQN networks (torso, tau embedding and head each, no sharing), each with its own target network and its own quantile
Huber loss (summed), all trained on the same minibatches of the env (or configured) reward. Diversity comes from the
independent initialisations and tau samples only (no bootstrap masks). An action's score is the mean over members of
each member's mean quantile (over the K policy fractions, so `cvar_alpha` still applies). The ensemble acts as one
agent: the next action a* of every member's target is the ensemble's greedy action at s' (online ensemble under
double-Q, else the target ensemble), the same rule it acts by.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from robotrl.agents.iqn import IQN, IQNConfig
from robotrl.core.buffers import ReplayBatch


class EnsembleIQNConfig(IQNConfig):
    """IQN hyper-parameters (each member's) and the ensemble size."""

    name: Literal["ensemble_iqn"] = "ensemble_iqn"
    ensemble_size: int = Field(5, ge=1, description="E, independently initialised IQN networks")


class IQNEnsemble(nn.Module):
    """E quantile networks on the same inputs: [batch, T, E, A]."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(obs, taus) for member in self.members], 2)


class EnsembleIQN(IQN):
    """IQN ensemble baseline: members learn independently from the scalar reward; actions maximise their mean."""

    config: EnsembleIQNConfig

    def make_net(self) -> nn.Module:
        return IQNEnsemble([IQN.make_net(self) for _ in range(self.config.ensemble_size)])

    def action_values(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """[batch, A]: the members' mean quantiles at the policy fractions, averaged over members."""
        return super().action_values(net, obs).mean(1)

    def head_rewards(self, batch: ReplayBatch) -> torch.Tensor:
        """[batch, 1]: the one scalar reward, broadcast to every member."""
        return batch.reward.unsqueeze(-1)
