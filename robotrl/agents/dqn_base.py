"""The DQN machinery that QR-DQN and IQN share: epsilon-greedy acting, target network, double-Q, quantile TD loss.

A subclass says only how its network turns (observations, quantile fractions) into return quantiles per action and
which fractions to use for the loss, the target and acting (`quantiles`, `train_taus`, `target_taus`,
`policy_taus`). Everything else, including the update, lives here once.

Actions are stored as one column holding the action index (see `ActionAdapter`). With `n_step` > 1 the replay buffer
returns n-step returns (cut at episode ends) and the discount gamma^m of the steps taken, which the target uses.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from pydantic import Field
from torch import nn

from robotrl.agents.base import Agent, AgentConfig, adam, soft_update
from robotrl.core.buffers import ReplayBatch
from robotrl.core.quantile import quantile_huber_loss


class DQNConfig(AgentConfig):
    """Hyper-parameters every distributional DQN shares (defaults: sb3-contrib QR-DQN, adapted to small tasks)."""

    lr: float = Field(1e-4, gt=0.0)
    adam_eps: float = Field(1e-2 / 32, gt=0.0, description="Adam epsilon (Dopamine and QR-DQN use 0.01 / batch)")
    batch_size: int = Field(32, gt=0)
    buffer_size: int = Field(1_000_000, gt=0)
    learning_starts: int = Field(1000, ge=0, description="env steps of uniform random actions before learning")
    train_every: int = Field(4, gt=0, description="env steps between update rounds")
    gradient_steps: int = Field(1, gt=0, description="updates per round")
    target_update_interval: int = Field(1000, gt=0, description="gradient updates between target-network updates")
    tau: float = Field(1.0, gt=0.0, le=1.0, description="target update weight: 1 = hard copy, < 1 = Polyak averaging")
    double_q: bool = Field(False, description="pick the next action with the online net, score it with the target")
    n_step: int = Field(1, ge=1, description="bootstrap after n steps of discounted rewards (Rainbow uses 3)")
    kappa: float = Field(1.0, gt=0.0, description="Huber threshold of the quantile loss")
    epsilon_start: float = Field(1.0, ge=0.0, le=1.0)
    epsilon_end: float = Field(0.01, ge=0.0, le=1.0)
    exploration_steps: int = Field(10_000, ge=0, description="env steps the agent acts (after learning_starts) "
                                   "while epsilon falls linearly from epsilon_start to epsilon_end")
    max_grad_norm: float | None = Field(10.0, gt=0.0, description="clip the gradient norm; null = no clipping")


class DistributionalDQN(Agent):
    """Epsilon-greedy agent over discrete actions that learns return quantiles with the quantile Huber loss."""

    action_spaces = ("discrete",)
    fixed_taus = False  # True when the policy, training and target fractions are one fixed grid (QR-DQN)
    config: DQNConfig

    def __init__(self, obs_dim: int, num_actions: int, config: DQNConfig, device: torch.device) -> None:
        super().__init__(obs_dim, num_actions, device)
        self.config = config
        self.net, self.target_net = self.make_net(), self.make_net()
        self.target_net.load_state_dict(self.net.state_dict())
        self.target_net.requires_grad_(False)
        self.to(device)
        self.optimizer = self.make_optimizer()
        self.acted_steps = 0  # env steps chosen by `act(deterministic=False)`: the clock of the epsilon schedule

    @abstractmethod
    def make_net(self) -> nn.Module:
        """A fresh quantile network (called twice: online and target)."""

    @abstractmethod
    def quantiles(self, net: nn.Module, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        """[batch, T, num_actions] return quantiles of `net` at fractions `taus` ([T] or [batch, T])."""

    @abstractmethod
    def train_taus(self, batch_size: int) -> torch.Tensor:
        """Fractions of the predicted quantiles in the loss ([M] fixed or [batch, N] sampled)."""

    @abstractmethod
    def target_taus(self, batch_size: int) -> torch.Tensor:
        """Fractions of the target atoms."""

    @abstractmethod
    def policy_taus(self, batch_size: int) -> torch.Tensor:
        """Fractions whose mean quantile scores an action when acting and picking the target's next action."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh Adam over the online network's parameters."""
        return adam(self.net.parameters(), self.config.lr, self.device, eps=self.config.adam_eps)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.optimizer}

    def reset_critic(self) -> None:
        """Re-initialise the online network in place (same modules and device), copy it into the target and
        restart the optimiser: PEBBLE's reset once the reward is learned (the epsilon schedule keeps its clock)."""
        self.net.load_state_dict(self.make_net().state_dict())
        self.target_net.load_state_dict(self.net.state_dict())
        self.optimizer = self.make_optimizer()

    def replay_sampling(self) -> dict[str, Any]:
        return {"n_step": self.config.n_step, "gamma": self.config.gamma}

    def full_state(self) -> dict[str, Any]:
        return {**super().full_state(), "acted_steps": self.acted_steps}

    def load_full_state(self, state: dict[str, Any]) -> None:
        super().load_full_state(state)
        self.acted_steps = state["acted_steps"]

    @property
    def epsilon(self) -> float:
        """Current exploration rate of the linear schedule."""
        c = self.config
        progress = min(1.0, self.acted_steps / c.exploration_steps) if c.exploration_steps else 1.0
        return c.epsilon_start + progress * (c.epsilon_end - c.epsilon_start)

    def action_values(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """[batch, num_actions] scores to maximise: the mean quantile at `policy_taus` (the expected return, or a
        risk measure when those fractions are restricted); [batch, H, num_actions] for a net with H heads."""
        return self.quantiles(net, obs, self.policy_taus(obs.shape[0])).mean(1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """[batch, 1] action indices (as floats, the stored format): greedy, or epsilon-greedy while training."""
        action = self.greedy_action(self.net, obs)
        if not deterministic:
            explore = torch.rand(action.shape, device=action.device) < self.epsilon
            random = torch.randint(0, self.action_dim, action.shape, device=action.device)
            action = torch.where(explore, random, action)
            self.acted_steps += obs.shape[0]
        return action.unsqueeze(-1).float()

    def greedy_action(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """[batch] indices of the actions `net` prefers; used when acting and to pick the target's next action."""
        return self.action_values(net, obs).argmax(-1)

    def head_rewards(self, batch: ReplayBatch) -> torch.Tensor:
        """The rewards the quantile heads learn: [batch] for one return distribution per action; [batch, H] for H heads
        (a column each, or one column broadcast to every head)."""
        return batch.reward

    def loss(self, batch: ReplayBatch) -> torch.Tensor:
        """Quantile Huber loss of Z(s, a) against r + gamma^m * (1 - terminated) * Z_target(s', a*) (m = 1 unless
        the batch holds n-step returns), summed over heads when the network has several ([batch, T, H, A])."""
        c, size = self.config, batch.obs.shape[0]
        discount = c.gamma if batch.discount is None else batch.discount
        with torch.no_grad():
            every_next_z = self.quantiles(self.target_net, batch.next_obs, self.target_taus(size))
            if self.fixed_taus and not c.double_q:  # the target atoms already score the actions: one target pass
                next_action = every_next_z.mean(1).argmax(-1)
            else:
                next_action = self.greedy_action(self.net if c.double_q else self.target_net, batch.next_obs)
            next_z = take_action(every_next_z, next_action)
            keep = (discount * (1.0 - batch.terminated)).view(-1, *[1] * (next_z.dim() - 1))
            target = self.head_rewards(batch).unsqueeze(1) + keep * next_z
        taus = self.train_taus(size)
        z = take_action(self.quantiles(self.net, batch.obs, taus), batch.action.long().view(size))
        if z.dim() == 2:
            return quantile_huber_loss(z, target, taus, c.kappa)
        heads = z.shape[-1]  # [batch, T, H]: each head its own loss, summed
        return heads * quantile_huber_loss(z.movedim(-1, 0), target.movedim(-1, 0), taus, c.kappa)

    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One gradient step; the target network follows every `target_update_interval` steps."""
        c = self.config
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        if self.num_updates % c.target_update_interval == 0:
            soft_update(self.target_net, self.net, c.tau)
        return {"quantile_loss": loss.detach(), "epsilon": torch.tensor(self.epsilon)}


def take_action(z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Quantiles of one action per transition: z [batch, T, ..., A] and action [batch] -> [batch, T, ...]."""
    index = action.view(-1, *[1] * (z.dim() - 1)).expand(*z.shape[:-1], 1)
    return z.gather(-1, index).squeeze(-1)
