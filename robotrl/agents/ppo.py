"""Proximal Policy Optimisation (Schulman et al. 2017) with GAE, clipping, optional value clipping and
observation / reward normalisation.

The policy is a state-independent-std Gaussian on an MLP and the value function a separate MLP (SB3's default
layout, orthogonal init). Minibatch updates work on preallocated tensors with plain-tensor log-probabilities.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from robotrl.agents.base import Agent, AgentConfig, adam
from robotrl.core.buffers import RolloutBuffer
from robotrl.core.distributions import LOG_SQRT_2PI, gaussian_entropy, gaussian_log_prob
from robotrl.core.networks import HostMLP, fast_forward, mlp, orthogonal_init
from robotrl.core.normalizers import ReturnScaler, RunningMeanStd

STAT_NAMES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


class PPOConfig(AgentConfig):
    """PPO hyper-parameters (defaults follow SB3's PPO)."""

    name: Literal["ppo"] = "ppo"
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: str = "tanh"
    num_steps: int = Field(2048, gt=0, description="env steps per env in each rollout")
    minibatch_size: int = Field(64, gt=1)
    epochs: int = Field(10, gt=0)
    lr: float = Field(3e-4, gt=0.0)
    anneal_lr: bool = Field(False, description="linearly decay the learning rate to 0 over training")
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_range: float = Field(0.2, gt=0.0)
    clip_range_vf: float | None = Field(None, gt=0.0, description="value clipping (PPO2 max form); None = off")
    ent_coef: float = Field(0.0, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)
    normalize_advantage: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    target_kl: float | None = Field(None, gt=0.0, description="stop an epoch's updates when approx KL exceeds 1.5x")
    log_std_init: float = 0.0
    ortho_init: bool = True


class PPO(Agent):
    """PPO for continuous (Gaussian, clipped to [-1, 1] in the env) or discrete (categorical) actions."""

    on_policy = True
    action_spaces = ("continuous", "discrete")

    def __init__(
        self, obs_dim: int, action_dim: int, config: PPOConfig, device: torch.device, num_envs: int = 1,
        discrete: bool = False,
    ) -> None:
        super().__init__(obs_dim, action_dim, device)
        self.config = c = config
        self.discrete = discrete
        self.policy_net = mlp(obs_dim, c.hidden_sizes, action_dim, c.activation)
        self.value_net = mlp(obs_dim, c.hidden_sizes, 1, c.activation)
        if c.ortho_init:
            orthogonal_init(self.policy_net, math.sqrt(2))
            orthogonal_init(self.value_net, math.sqrt(2))
            orthogonal_init(self.policy_net[-1], 0.01)
            orthogonal_init(self.value_net[-1], 1.0)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(c.log_std_init)), requires_grad=not discrete)
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.return_scaler = ReturnScaler(num_envs, c.gamma)
        self.to(device)
        self.opt = adam(self.parameters(), c.lr, device)
        object.__setattr__(self, "_loss", self.compiled_fn(self._minibatch_loss))
        host_ok = not discrete and HostMLP.supports(self.policy_net) and HostMLP.supports(self.value_net)
        self._host = (HostMLP(self.policy_net), HostMLP(self.value_net)) if host_ok else None
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.opt}

    def normalize_obs(self, obs: torch.Tensor, update: bool = False) -> torch.Tensor:
        """Normalise observations when configured, optionally folding them into the running stats first."""
        if not self.config.normalize_obs:
            return obs
        if update:
            self.obs_rms.update(obs)
        return self.obs_rms.normalize(obs)

    def scale_reward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Divide rewards by the running std of the discounted return when configured."""
        return self.return_scaler(reward, done) if self.config.normalize_reward else reward

    def _log_prob_entropy(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = fast_forward(self.policy_net, obs)
        if self.discrete:
            logits = torch.log_softmax(out, -1)
            log_prob = logits.gather(-1, action.long()).squeeze(-1)
            return log_prob, -(logits.exp() * logits).sum(-1)
        log_std = self.log_std.expand_as(out)
        return gaussian_log_prob(action, out, log_std), gaussian_entropy(log_std)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Deterministic (mean / argmax) or sampled actions for raw observations."""
        return self.sample(self.normalize_obs(obs), deterministic)[0]

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Action and its log-probability for already-normalised observations."""
        out = fast_forward(self.policy_net, obs)
        if self.discrete:
            logits = torch.log_softmax(out, -1)
            action = logits.argmax(-1, keepdim=True) if deterministic else torch.multinomial(logits.exp(), 1)
            return action.float(), logits.gather(-1, action).squeeze(-1)
        if deterministic:
            return out, gaussian_log_prob(out, out, self.log_std.expand_as(out))
        noise = torch.randn_like(out)  # log N(mean + std*noise | mean, std) needs only the noise
        log_prob = (-0.5 * noise.pow(2) - self.log_std - LOG_SQRT_2PI).sum(-1)
        return out + self.log_std.exp() * noise, log_prob

    @torch.no_grad()
    def collect(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One collection step from raw observations: (normalised obs, action, log-prob, value) as host arrays.

        Updates the observation statistics first when observation normalisation is on. On a CPU, continuous policies
        run through numpy views of the same weights (several times faster per step; the noise still comes from
        torch's generator, so runs stay reproducible).
        """
        if self._host is not None:
            obs32 = np.asarray(obs, dtype=np.float32)
            if self.config.normalize_obs:
                obs32 = self.normalize_obs(torch.from_numpy(obs32), update=True).numpy()
            policy, value_fn = self._host
            mean, value = policy(obs32), value_fn(obs32)[:, 0]
            noise = torch.randn(mean.shape).numpy()
            log_std = self.log_std.detach().numpy()
            log_prob = (-0.5 * noise * noise - log_std - LOG_SQRT_2PI).sum(-1)
            return obs32, (mean + np.exp(log_std) * noise).astype(np.float32), log_prob.astype(np.float32), value
        obs_t = self.normalize_obs(torch.as_tensor(obs, dtype=torch.float32, device=self.device), update=True)
        action, log_prob = self.sample(obs_t)
        value = fast_forward(self.value_net, obs_t).squeeze(-1)
        return obs_t.cpu().numpy(), action.cpu().numpy(), log_prob.cpu().numpy(), value.cpu().numpy()

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """State values for already-normalised observations."""
        return fast_forward(self.value_net, obs).squeeze(-1)

    def set_progress(self, fraction_done: float) -> None:
        """Anneal the learning rate linearly when configured."""
        if self.config.anneal_lr:
            for group in self.opt.param_groups:
                group["lr"] = self.config.lr * max(1.0 - fraction_done, 0.0)

    def _minibatch_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
        returns: torch.Tensor, old_values: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Clipped-surrogate + value + entropy loss of one minibatch, and detached stats (see STAT_NAMES)."""
        c = self.config
        old_log_prob, advantages, returns, old_values = (x.squeeze(-1) for x in (old_log_prob, advantages, returns,
                                                                                   old_values))
        log_prob, entropy = self._log_prob_entropy(obs, actions)
        values = fast_forward(self.value_net, obs).squeeze(-1)
        if c.normalize_advantage and advantages.shape[0] > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_prob - old_log_prob
        ratio = log_ratio.exp()
        policy_loss = -torch.min(advantages * ratio,
                                 advantages * ratio.clamp(1.0 - c.clip_range, 1.0 + c.clip_range)).mean()
        value_loss = (values - returns).pow(2)
        if c.clip_range_vf is not None:  # PPO2's form: the worse of the clipped and unclipped errors
            clipped = old_values + (values - old_values).clamp(-c.clip_range_vf, c.clip_range_vf)
            value_loss = torch.max(value_loss, (clipped - returns).pow(2))
        value_loss = value_loss.mean()
        entropy = entropy.mean()
        loss = policy_loss - c.ent_coef * entropy + c.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > c.clip_range).float().mean()
        stats = (policy_loss.detach(), value_loss.detach(), entropy.detach(), approx_kl, clip_fraction)
        return loss, stats

    def update(self, rollout: RolloutBuffer) -> dict[str, torch.Tensor]:
        """`epochs` passes of clipped-surrogate minibatch updates over a finished rollout."""
        c = self.config
        data = rollout.flat()
        n = data["obs"].shape[0]
        columns = [data["obs"], data["actions"]] + [data[k].unsqueeze(-1) for k in
                                                    ("log_probs", "advantages", "returns", "values")]
        packed = torch.cat(columns, dim=-1)  # one gather per minibatch instead of six
        widths = [c.shape[-1] for c in columns]
        params = [p for p in self.parameters() if p.requires_grad]
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in STAT_NAMES}
        stop = False
        for _ in range(c.epochs):
            for idx in torch.randperm(n, device=self.device).split(c.minibatch_size):
                loss, minibatch_stats = self._loss(*packed[idx].split(widths, dim=-1))
                if c.target_kl is not None and minibatch_stats[STAT_NAMES.index("approx_kl")] > 1.5 * c.target_kl:
                    stop = True
                    break
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, c.max_grad_norm, foreach=True)
                self.opt.step()
                self.num_updates += 1
                for key, value in zip(STAT_NAMES, minibatch_stats, strict=True):
                    stats[key].append(value)
            if stop:
                break
        metrics = {k: torch.stack(v).mean() for k, v in stats.items() if v}
        returns, values = data["returns"], data["values"]
        metrics["explained_variance"] = 1.0 - (returns - values).var() / (returns.var() + 1e-8)
        metrics["std"] = self.log_std.exp().mean().detach()
        return metrics
