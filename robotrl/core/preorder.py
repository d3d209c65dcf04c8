"""Quantile dominance and preorder-optimal action subsets over per-objective return quantiles (used by Pr-IQN).

Every objective is "higher is better". Z_k(a, tau) is action a's return quantile on objective k at fraction tau, on a
common grid of T fractions. The rules (our design; see `robotrl.agents.pr_iqn` for why):

- Quantile dominance QD_k(a, b) = fraction of the grid where Z_k(a, tau) > Z_k(b, tau) + margin.
- a dominates b on k iff QD_k(a, b) >= 1 - epsilon. With margin >= 0 the fractions where a beats b and where b beats
  a are disjoint, so QD_k(a, b) + QD_k(b, a) <= 1; with epsilon < 0.5 dominance is therefore antisymmetric, and no
  action dominates itself.
- Within a group of equally ranked objectives, b beats a iff b dominates a on at least one objective of the group and
  a dominates b on none (Pareto dominance over the group).
- Optimal subset: A_0 = all actions; group l keeps the actions of A_(l-1) that no other action of A_(l-1) beats.
  Where every action of A_(l-1) is beaten (a cycle, possible inside a multi-objective group, or on one objective when
  epsilon >= 1/3), that group leaves A_(l-1) unchanged, so the subset is never empty. A single remaining action is
  never removed (nothing else is left to beat it), which is the "stop early" rule.

All functions are batched over states and over all action pairs at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def quantile_dominance(za: torch.Tensor, zb: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """QD(a, b): the fraction of the common tau grid (last dim) where za > zb + margin; [..., T] -> [...]."""
    return (za > zb + margin).float().mean(-1)


def dominates(za: torch.Tensor, zb: torch.Tensor, epsilon: float, margin: float = 0.0) -> torch.Tensor:
    """Whether a dominates b: QD(a, b) >= 1 - epsilon; [..., T] -> bool [...]."""
    return quantile_dominance(za, zb, margin) >= 1.0 - epsilon


def dominance_matrix(z: torch.Tensor, epsilon: float, margin: float = 0.0) -> torch.Tensor:
    """Pairwise dominance of all actions on every objective: z [batch, T, C, A] -> bool [batch, C, A, A] whose entry
    [n, k, i, j] says that action i dominates action j on objective k in state n."""
    per_action = z.permute(0, 2, 3, 1)  # [batch, C, A, T]
    return dominates(per_action.unsqueeze(3), per_action.unsqueeze(2), epsilon, margin)


def optimal_subset(z: torch.Tensor, groups: Sequence[Sequence[int]], epsilon: float,
                   margin: float = 0.0) -> torch.Tensor:
    """Bool mask [batch, A] of the actions left after filtering by each group of objective indices in precedence order
    (see the module docstring); z is [batch, T, C, A]."""
    dominance = dominance_matrix(z, epsilon, margin)
    alive = torch.ones(z.shape[0], z.shape[-1], dtype=torch.bool, device=z.device)
    for group in groups:
        on_some = dominance[:, list(group)].any(1)  # [batch, A, A]: i dominates j on some objective of the group
        beats = on_some & ~on_some.transpose(1, 2)
        beaten = (beats & alive.unsqueeze(2)).any(1)  # by a surviving action
        kept = alive & ~beaten
        alive = torch.where(kept.any(-1, keepdim=True), kept, alive)
        if bool((alive.sum(-1) == 1).all()):
            break
    return alive
