"""Twin Delayed DDPG (Fujimoto et al. 2018): clipped double-Q, target policy smoothing, delayed actor updates.

Matches Stable-Baselines3's TD3 (actor loss on the first critic, Polyak updates of actor and critic targets after
each delayed actor step), with both critics fused into one batched matmul and fused Adam.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robotrl.agents.base import Agent, AgentConfig, adam, frozen, soft_update
from robotrl.core.buffers import ReplayBatch
from robotrl.core.networks import EnsembleMLP, fast_forward, mlp


class TD3Config(AgentConfig):
    """TD3 hyper-parameters (defaults follow the TD3 paper and SB3)."""

    name: Literal["td3"] = "td3"
    tau: float = Field(0.005, gt=0.0, le=1.0)
    batch_size: int = Field(256, gt=0)
    buffer_size: int = Field(1_000_000, gt=0)
    learning_starts: int = Field(5000, ge=0)
    train_every: int = Field(1, gt=0)
    gradient_steps: int = Field(1, gt=0)
    actor_lr: float = Field(1e-3, gt=0.0)
    critic_lr: float = Field(1e-3, gt=0.0)
    policy_delay: int = Field(2, ge=1)
    exploration_noise: float = Field(0.1, ge=0.0, description="std of Gaussian action noise while collecting")
    target_policy_noise: float = Field(0.2, ge=0.0)
    target_noise_clip: float = Field(0.5, ge=0.0)


class DeterministicActor(nn.Module):
    """MLP with a tanh output in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: list[int], act: str) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, action_dim, act)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class TD3(Agent):
    """TD3 for continuous actions in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, config: TD3Config, device: torch.device) -> None:
        super().__init__(obs_dim, action_dim, device)
        self.config = c = config
        self.actor = DeterministicActor(obs_dim, action_dim, c.hidden_sizes, c.activation)
        self.actor_target = DeterministicActor(obs_dim, action_dim, c.hidden_sizes, c.activation)
        self.critic = EnsembleMLP(2, obs_dim + action_dim, c.hidden_sizes, 1, c.activation)
        self.critic_target = EnsembleMLP(2, obs_dim + action_dim, c.hidden_sizes, 1, c.activation)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        self.to(device)
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr, device)
        self.critic_opt = adam(self.critic.parameters(), c.critic_lr, device)
        self.set_compiled(_actor=self.actor, _critic=self.critic, _actor_target=self.actor_target,
                          _critic_target=self.critic_target)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action = torch.tanh(fast_forward(self.actor.net, obs))
        if deterministic or self.config.exploration_noise == 0:
            return action
        return (action + self.config.exploration_noise * torch.randn_like(action)).clamp(-1.0, 1.0)

    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One critic step, and an actor step plus target updates every `policy_delay` calls."""
        c = self.config
        with torch.no_grad():
            noise = (torch.randn_like(batch.action) * c.target_policy_noise).clamp(-c.target_noise_clip,
                                                                                   c.target_noise_clip)
            next_action = (self._actor_target(batch.next_obs) + noise).clamp(-1.0, 1.0)
            next_q = self._critic_target(torch.cat([batch.next_obs, next_action], -1)).squeeze(-1).min(0).values
            target = batch.reward + c.gamma * (1.0 - batch.terminated) * next_q
        q = self._critic(torch.cat([batch.obs, batch.action], -1)).squeeze(-1)
        critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.num_updates += 1
        metrics = {"critic_loss": critic_loss.detach(), "q": q.detach().mean()}

        if self.num_updates % c.policy_delay == 0:
            with frozen(self.critic):
                first_q = self._first_critic(torch.cat([batch.obs, self._actor(batch.obs)], -1))
            actor_loss = -first_q.mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            metrics["actor_loss"] = actor_loss.detach()
        return metrics

    def _first_critic(self, x: torch.Tensor) -> torch.Tensor:
        """Q1 alone (TD3's actor loss uses only the first critic), computed without evaluating the second."""
        layers = self.critic.layers
        for layer in layers[:-1]:
            x = self.critic.act(torch.addmm(layer.bias[0], x, layer.weight[0]))
        return torch.addmm(layers[-1].bias[0], x, layers[-1].weight[0])
