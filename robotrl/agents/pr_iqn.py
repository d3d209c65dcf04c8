"""Preordered multi-objective IQN (Pr-IQN): one return distribution per reward component, actions chosen by precedence.

The Pr-MOMDP paper (arXiv 2603.20230) adds a preorder over reward components to a multi-objective MDP, compares two
actions' return distributions by "quantile dominance" and restricts both acting and training targets to the actions
that stay non-dominated under each objective, taken in precedence order; it instantiates this with IQN. Only its
abstract was available, so every rule below is OUR design (robotrl's reading of the abstract, see
reference/algorithms.md §2.7), not the paper's:

- Objectives: one per env reward component, r_k = sign_k * raw value_k (sign +1 to maximize, -1 to minimize), so
  higher is better for every objective. The component weights never enter learning or the precedence (a preorder is
  scale-invariant); only the "scalarised" tie-break uses them.
- Network: IQN's state torso and tau embedding, shared, with one quantile head per objective: [batch, T, C, A].
  Each objective has its own quantile Huber loss against its own target; the losses are summed.
- Preorder: `preorder` lists ranked groups of component names, most important first. Every component of the env must
  appear exactly once (an unranked component is an error, so nothing is learned or ignored silently: put the ones
  that matter least in a last group).
- Quantile dominance and the optimal subset (`robotrl.core.preorder`): on a fixed midpoint grid of K fractions,
  a dominates b on objective k iff Z_k(a, tau) > Z_k(b, tau) + `quantile_margin` on at least a 1 - epsilon share of
  the grid (epsilon < 0.5 keeps it antisymmetric). Inside a group, b beats a iff b dominates a on some objective of
  the group and a dominates b on none. A_0 = all actions; each group in turn removes the actions of the previous set
  that another action of that set beats (a group that would remove all of them, a dominance cycle, is skipped).
- Tie-break inside the final subset (`tie_break`): "scalarised" = the highest env-weighted sum of objective means
  (the env reward's expectation); "last_group" = the highest sum of the last group's objective means; "random" =
  uniform.
- The subset shapes acting AND targets: the next action a* at s' is the same rule applied at s' (with the online net
  under double-Q, else the target net), and every objective bootstraps from Z_k(s', a*) of that one a*.
  Exploration is DistributionalDQN's epsilon-greedy; n-step returns work per objective because the replay buffer
  sums the components over the n steps and the batch carries the discount.

Pr-IQN learns from the env's raw reward components, not from `batch.reward`: a learned reward source does not change
what it optimises.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from envs.components import RewardSpec
from robotrl.agents.iqn import IQN, ImplicitQuantileNet, IQNConfig
from robotrl.core.buffers import ReplayBatch
from robotrl.core.networks import EnsembleMLP
from robotrl.core.preorder import optimal_subset
from robotrl.core.quantile import midpoint_taus


class PrIQNConfig(IQNConfig):
    """Pr-IQN hyper-parameters: IQN's, plus the preorder and the dominance rule."""

    name: Literal["pr_iqn"] = "pr_iqn"
    preorder: list[list[str]] = Field(min_length=1, description="ranked groups of reward component names, most "
                                      "important first, e.g. [[collision], [speed], [right_lane, on_road]]; every "
                                      "component of the env exactly once")
    dominance_epsilon: float = Field(0.1, ge=0.0, lt=0.5, description="a dominates b on an objective when it is "
                                     "better on at least a 1 - epsilon share of the tau grid (< 0.5: antisymmetric)")
    quantile_margin: float = Field(0.0, ge=0.0, description="a quantile counts as better only by more than this")
    num_policy_samples: int = Field(32, gt=0, description="K, size of the fixed midpoint tau grid on which actions "
                                    "are compared (dominance and tie-break); with cvar_alpha < 1 the grid covers "
                                    "[0, cvar_alpha]")
    tie_break: Literal["scalarised", "last_group", "random"] = Field(
        "scalarised", description="pick inside the optimal subset: the highest env-weighted sum of objective means, "
        "the highest sum of the last group's means, or uniformly at random")

    @field_validator("preorder")
    @classmethod
    def _groups_distinct(cls, preorder: list[list[str]]) -> list[list[str]]:
        """No empty group, no component ranked twice."""
        if any(not group for group in preorder):
            raise ValueError("every preorder group needs at least one component name")
        names = [name for group in preorder for name in group]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"components ranked more than once: {repeated}")
        return preorder


def preorder_groups(preorder: Sequence[Sequence[str]], reward_spec: RewardSpec) -> list[list[int]]:
    """The preorder's groups as indices into the env's reward spec; a clear error for unknown or unranked names."""
    declared = [component.name for component in reward_spec]
    if not declared:
        raise ValueError("pr_iqn learns one return distribution per reward component, but this env declares none")
    unknown = [name for group in preorder for name in group if name not in declared]
    if unknown:
        hints = [f"{name!r} -> {close[0]!r}?" for name in unknown
                 if (close := difflib.get_close_matches(name, declared, n=1))]
        raise ValueError(f"algo.preorder names unknown reward component(s) {unknown}"
                         f"{' (did you mean ' + ', '.join(hints) + ')' if hints else ''}; the env declares {declared}")
    ranked = {name for group in preorder for name in group}
    missing = [name for name in declared if name not in ranked]
    if missing:
        raise ValueError(f"algo.preorder must rank every reward component of the env; missing {missing} (add them, "
                         f"e.g. as a last group {missing}); the env declares {declared}")
    return [[declared.index(name) for name in group] for group in preorder]


class ObjectiveHeads(nn.Module):
    """One MLP quantile head per objective, evaluated together: [batch, T, features] -> [batch, T, C, A]."""

    def __init__(self, num_objectives: int, in_dim: int, hidden: list[int], num_actions: int, act: str) -> None:
        super().__init__()
        self.heads = EnsembleMLP(num_objectives, in_dim, hidden, num_actions, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, taus, features = x.shape
        out = self.heads(x.reshape(batch * taus, features))  # [C, batch * T, A]
        return out.view(out.shape[0], batch, taus, -1).permute(1, 2, 0, 3)


class PrIQN(IQN):
    """IQN with a quantile head per reward component, acting and bootstrapping inside the preorder's optimal subset."""

    uses_reward_spec = True
    config: PrIQNConfig

    def __init__(self, obs_dim: int, num_actions: int, config: PrIQNConfig, device: torch.device,
                 reward_spec: RewardSpec = ()) -> None:
        # resolved before the base class builds the networks, whose head count they fix
        self.groups = preorder_groups(config.preorder, reward_spec)
        self.num_objectives = len(reward_spec)
        super().__init__(obs_dim, num_actions, config, device)
        self.signs = torch.tensor([1.0 if c.direction == "maximize" else -1.0 for c in reward_spec], device=device)
        # env reward = sum of signed_weight x raw = sum of weight x objective, as the objectives carry the sign
        self.weights = torch.tensor([c.weight for c in reward_spec], device=device)
        self.grid = config.cvar_alpha * midpoint_taus(config.num_policy_samples, device)

    def make_net(self) -> nn.Module:
        c = self.config
        heads = ObjectiveHeads(self.num_objectives, c.hidden_sizes[-2], c.hidden_sizes[-1:], self.action_dim,
                               c.activation)
        return ImplicitQuantileNet(self.obs_dim, self.action_dim, c.hidden_sizes, c.activation, c.embedding_dim,
                                   head=heads)

    def policy_taus(self, batch_size: int) -> torch.Tensor:
        return self.grid

    def head_rewards(self, batch: ReplayBatch) -> torch.Tensor:
        """[batch, C] per-objective rewards: direction sign x raw component value (n-step summed by the buffer)."""
        if batch.components is None or batch.components.shape[-1] != self.num_objectives:
            raise ValueError(f"pr_iqn needs the {self.num_objectives} raw reward components in every batch")
        return batch.components * self.signs

    def optimal_actions(self, net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bool mask [batch, A] of the preorder's optimal subset, objective quantiles [batch, K, C, A] on the grid)."""
        c = self.config
        z = self.quantiles(net, obs, self.grid)
        return optimal_subset(z, self.groups, c.dominance_epsilon, c.quantile_margin), z

    def greedy_action(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """The tie-break's pick inside the optimal subset (used when acting and for the target's next action)."""
        subset, z = self.optimal_actions(net, obs)
        means = z.mean(1)  # [batch, C, A]
        if self.config.tie_break == "scalarised":
            scores = (means * self.weights[:, None]).sum(1)
        elif self.config.tie_break == "last_group":
            scores = means[:, self.groups[-1]].sum(1)
        else:
            scores = torch.rand(means.shape[0], means.shape[-1], device=means.device)
        return scores.masked_fill(~subset, -torch.inf).argmax(-1)
