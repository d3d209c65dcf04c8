"""Truncated Quantile Critics (Kuznetsov et al. 2020): SAC with distributional critics and truncated targets.

Each of N critics predicts M quantiles of the return. The target pools all N*M atoms of the target critics at the next
state, sorts them and drops the k*N largest (k = `top_quantiles_to_drop_per_net`), which controls overestimation more
finely than SAC's min over two critics. Every critic regresses its M quantiles onto the kept atoms with the quantile
Huber loss; the actor maximises the mean of all atoms minus alpha * log pi. Actor, entropy tuning and update order
are SAC's (this class only swaps the critic).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from robotrl.agents.sac import SAC, SACConfig
from robotrl.core.buffers import ReplayBatch
from robotrl.core.distributions import squashed_gaussian_sample
from robotrl.core.networks import EnsembleMLP
from robotrl.core.quantile import midpoint_taus, quantile_huber_loss


class TQCConfig(SACConfig):
    """TQC hyper-parameters: SAC's, plus the quantile critics (defaults follow the paper and sb3-contrib)."""

    name: Literal["tqc"] = "tqc"  # type: ignore[assignment]
    num_critics: int = Field(5, ge=1)
    num_quantiles: int = Field(25, ge=1, description="quantiles predicted by each critic (M)")
    top_quantiles_to_drop_per_net: int = Field(2, ge=0, description="k: the target drops the top k*N of N*M atoms")

    @model_validator(mode="after")
    def _keeps_some_atoms(self) -> TQCConfig:
        if self.top_quantiles_to_drop_per_net >= self.num_quantiles:
            raise ValueError(f"top_quantiles_to_drop_per_net ({self.top_quantiles_to_drop_per_net}) must be smaller "
                             f"than num_quantiles ({self.num_quantiles})")
        return self


class TQC(SAC):
    """TQC for continuous actions in [-1, 1]."""

    config: TQCConfig

    def __init__(self, obs_dim: int, action_dim: int, config: TQCConfig, device: torch.device) -> None:
        super().__init__(obs_dim, action_dim, config, device)
        self.register_buffer("taus", midpoint_taus(config.num_quantiles, device), persistent=False)
        self.num_kept_atoms = config.num_critics * (config.num_quantiles - config.top_quantiles_to_drop_per_net)

    def make_critic(self) -> nn.Module:
        """N critics, each mapping (obs, action) to M quantiles: output [N, batch, M]."""
        c = self.config
        return EnsembleMLP(c.num_critics, self.obs_dim + self.action_dim, c.hidden_sizes, c.num_quantiles,
                           c.activation)

    def quantiles(self, critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[num_critics, batch, num_quantiles] return quantiles."""
        return critic(torch.cat([obs, action], dim=-1))

    def truncated_atoms(self, quantiles: torch.Tensor) -> torch.Tensor:
        """Pool the [N, B, M] quantiles per transition and keep the N*(M-k) smallest, sorted: [B, N*(M-k)]."""
        pooled = quantiles.transpose(0, 1).flatten(1)
        return pooled.sort(dim=-1).values[:, : self.num_kept_atoms]

    def critic_loss(self, batch: ReplayBatch, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantile Huber loss of every critic against the truncated soft target atoms, and the mean atom."""
        c = self.config
        with torch.no_grad():
            next_action, next_log_prob = squashed_gaussian_sample(*self._actor(batch.next_obs))
            atoms = self.truncated_atoms(self.quantiles(self._critic_target, batch.next_obs, next_action))
            soft_atoms = atoms - alpha * next_log_prob.unsqueeze(-1)
            target = batch.reward.unsqueeze(-1) + c.gamma * (1.0 - batch.terminated).unsqueeze(-1) * soft_atoms
        quantiles = self.quantiles(self._critic, batch.obs, batch.action)
        return quantile_huber_loss(quantiles, target, self.taus), quantiles.detach().mean()

    def policy_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[batch] mean of all N*M atoms (no truncation for the actor, as in the paper)."""
        return self.quantiles(self._critic, obs, action).mean(dim=(0, 2))
