"""Reward comparison from a batch of transitions, for continuous environments: STARC with value-adjusted levelling
("starc_val", Skalse et al., ICLR 2024) and EPIC ("epic", Gleave et al., 2021), vectorised in torch, with bootstrap
confidence intervals. `compare_rewards` takes any reward sources and returns the pairwise distance matrix.

A reward source is anything that maps a dict of tensors (obs, action, next_obs, env_reward, components, terminated,
...) to [n] rewards: `EnvReward`, `ComponentReward`, `LearnedReward`, or a plain function. Both distances lie in
[0, 1], are 0 for rewards that differ by potential shaping or positive scale, and 1 for R against −R; see
`reward_learning.comparison` for the exact (tabular) definitions these estimate.

STARC-VAL estimator. VAL's canonical reward is the advantage A^π(s, a) = E_{S'}[R(s, a, S') + γV^π(S')] − V^π(s) of
a fixed policy π, the same for both rewards. Here π is the policy that produced the batch, and:
  1. V is fitted by LSTD(0), the fixed point of TD(0) with linear features f(s) (random Fourier features with constant
     and linear terms), solved in closed form with a small ridge; terminated transitions do not bootstrap (the
     absorbing state is worth 0, as for the agents), truncated ones do;
  2. the TD errors δ = r + γV(s') − V(s) are regressed (ridge) on state-action features g(s, a) ⊇ f(s), which takes
     the expectation over S'; the fitted values are the canonical rewards of the batch's transitions;
  3. the norm is the L2 norm over the batch (the transition-weighted L2 norm with the data's state-action
     distribution) and the distance is ½·‖c1/‖c1‖ − c2/‖c2‖‖.
Every step is linear in the reward, so d(R, kR) = 0 and d(R, −R) = 1 hold exactly, and shaping by a potential in the
span of f cancels exactly (up to the ridge). Biases: V is the projected TD fixed point in the span of f, not V^π, and
a potential outside that span cancels only approximately (its residual e enters as γe(s') − e(s), small for smooth
e); the regression on g smooths the advantage and leaves some S'-redistribution noise when (s, a) are not revisited,
shrinking with more samples per feature; fitting and evaluating on the same batch adds an O(features/samples)
overfitting term; a replay buffer of several policies gives the advantage of their mixture. With one-hot features of
a finite MDP it is the exact VAL of the empirical MDP (certainty equivalence), so it converges to the tabular value.
VAL only evaluates rewards on observed transitions, so it works for the env reward and reward components too.
The defaults (128 random features, bandwidth 3, ridge 1e-6) were picked on Reacher-v5 random-policy data at γ = 0.99:
there a smooth non-linear potential leaves ≈ 0.01 after shaping, and a hard pair (full reward vs its distance term
alone) reads 0.57–0.58 from 10k transitions against 0.62 from 50k–100k. Errors in V act like shaping, and with γ
near 1 they are large next to the advantages, so use ≥ 10k transitions; the bootstrap shows the variance, not that
finite-sample bias.

EPIC estimator (Gleave et al.'s sample-based canonicalisation): with m coverage samples (A_j, S_j) drawn independently
from the batch's actions and states, φ(x) = mean_j R(x, A_j, S_j) and c = R + γφ(s') − φ(s) − γ·mean_j φ(S_j); the
distance is the Pearson distance √((1 − ρ)/2) over the batch. Using the same S_j as next states and as coverage states
makes it exactly invariant to shaping. Episodes are treated as infinite (terminations ignored), as in EPIC. It
evaluates every reward (2n + m)·m times on transitions (x, A_j, S_j) that never happened, so it needs rewards that are
functions of (obs, action, next_obs) alone: the env reward and components exist only for observed transitions.

DARD is not estimated from samples: its offsets need next states S' ~ τ(s, A) and S'' ~ τ(s', A) for actions A that
were not taken at s and s'. A batch holds one next state per (s, a) taken and continuous states are never revisited,
so those samples exist only with a learned dynamics model or by resetting the simulator to each state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from reward_learning.sources import Transitions

RewardFn = Callable[[Transitions], torch.Tensor]
Method = Literal["starc_val", "epic"]
METHODS: tuple[Method, ...] = ("starc_val", "epic")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is cuda when torch sees a GPU, else cpu; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_rewards(sources: Mapping[str, RewardFn], batch: Transitions, chunk_size: int = 65536) -> torch.Tensor:
    """[K, n] float64 rewards of the K sources on `batch`, evaluated in chunks of `chunk_size` transitions."""
    n = len(batch["obs"])
    rows = []
    for name, source in sources.items():
        parts = []
        for start in range(0, n, chunk_size):
            chunk = {k: v[start:start + chunk_size] for k, v in batch.items()}
            parts.append(_call(name, source, chunk).to(torch.float64))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def _call(name: str, source: RewardFn, batch: Transitions) -> torch.Tensor:
    with torch.no_grad():
        reward = source(batch)
    if reward.shape != (len(batch["obs"]),):
        raise ValueError(f"reward source '{name}' returned shape {tuple(reward.shape)} for {len(batch['obs'])} "
                         f"transitions; a reward source returns one reward per transition")
    return reward


# --------------------------------------------------------------------------------------------------- STARC-VAL
class FourierFeatures:
    """[1, x̃, √(2/D)·cos(x̃W + b)] for standardised inputs x̃: a Gaussian-kernel basis plus constant and linear terms.

    W ~ N(0, ℓ⁻²) with ℓ = bandwidth × the median distance between standardised inputs (median heuristic), so one
    setting suits one-hot states and joint angles alike."""

    def __init__(self, data: torch.Tensor, n_features: int, bandwidth: float, generator: torch.Generator) -> None:
        data = data.reshape(len(data), -1).to(torch.float64)
        self.mean = data.mean(0)
        std = data.std(0) if len(data) > 1 else torch.ones_like(self.mean)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std))
        probe = self._standardize(data[torch.randperm(len(data), generator=generator)[:1000].to(data.device)])
        distances = torch.pdist(probe) if len(probe) > 1 else torch.ones(1, dtype=torch.float64)
        scale = bandwidth * float(distances.median().clamp_min(1e-6))
        self.weight = (torch.randn(data.shape[1], n_features, generator=generator, dtype=torch.float64) / scale
                       ).to(data.device)
        self.phase = (2 * math.pi * torch.rand(n_features, generator=generator, dtype=torch.float64)).to(data.device)

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1).to(torch.float64) - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self._standardize(x)
        waves = math.sqrt(2.0 / self.weight.shape[1]) * torch.cos(x @ self.weight + self.phase)
        return torch.cat([torch.ones(len(x), 1, dtype=x.dtype, device=x.device), x, waves], dim=1)


@dataclass
class ValDesign:
    """The reward-independent part of the STARC-VAL estimate: f(s), γ·(1 − terminated)·f(s') and g(s, a)."""

    state: torch.Tensor
    discounted_next: torch.Tensor
    state_action: torch.Tensor

    @classmethod
    def from_batch(cls, batch: Transitions, gamma: float, n_features: int = 128, bandwidth: float = 3.0,
                   generator: torch.Generator | None = None) -> ValDesign:
        """Fit the feature maps on the batch: f on obs and next_obs; g = [f(s), ã, waves of (s̃, ã)]."""
        generator = generator or torch.Generator().manual_seed(0)
        n = len(batch["obs"])
        obs, next_obs = (batch[k].reshape(n, -1).to(torch.float64) for k in ("obs", "next_obs"))
        obs_action = torch.cat([obs, batch["action"].reshape(n, -1).to(obs.device, torch.float64)], 1)
        states = FourierFeatures(torch.cat([obs, next_obs]), n_features, bandwidth, generator)
        pairs = FourierFeatures(obs_action, n_features, bandwidth, generator)
        continues = torch.ones(n, dtype=torch.float64, device=obs.device)
        if "terminated" in batch:
            continues = continues - batch["terminated"].reshape(n).to(obs.device, torch.float64)
        f = states(obs)
        g = torch.cat([f, pairs(obs_action)[:, 1 + obs.shape[1]:]], 1)  # f already holds the constant and s̃
        return cls(f, gamma * continues[:, None] * states(next_obs), g)

    def subset(self, index: torch.Tensor) -> ValDesign:
        """The design of the transitions at `index` (a bootstrap resample)."""
        return ValDesign(self.state[index], self.discounted_next[index], self.state_action[index])


def _ridge_solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    scale = ridge * float(torch.diagonal(gram).abs().mean().clamp_min(1e-12))
    return torch.linalg.solve(gram + scale * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), rhs)


def val_canonicalize(rewards: torch.Tensor, design: ValDesign, ridge: float = 1e-6) -> torch.Tensor:
    """[K, n] STARC-VAL canonical rewards (advantage estimates) of [K, n] rewards on the design's transitions."""
    f, f_next, g = design.state, design.discounted_next, design.state_action
    n, targets = len(f), rewards.T
    weights = _ridge_solve(f.T @ (f - f_next) / n, f.T @ targets / n, ridge)  # LSTD(0): V = f·weights
    td_errors = targets + (f_next - f) @ weights
    advantage = _ridge_solve(g.T @ g / n, g.T @ td_errors / n, ridge)
    return (g @ advantage).T


def standardized_distances(canonical: torch.Tensor) -> torch.Tensor:
    """[K, K] distances ½·‖s_i − s_j‖ between s = c/‖c‖ (c itself when ‖c‖ = 0), ‖c‖² = the mean of c² over samples."""
    norms = canonical.pow(2).mean(1, keepdim=True).sqrt()
    unit = torch.where(norms > 0, canonical / norms.clamp_min(1e-300), canonical)
    return torch.stack([0.5 * (unit - row).pow(2).mean(1).sqrt() for row in unit])


# -------------------------------------------------------------------------------------------------------- EPIC
def pearson_distances(canonical: torch.Tensor) -> torch.Tensor:
    """[K, K] Pearson distances √((1 − ρ)/2) between rows over samples (a constant row has ρ = 0 with others)."""
    centred = canonical - canonical.mean(1, keepdim=True)
    scale = centred.pow(2).sum(1).sqrt()
    constant = scale <= 1e-12 * canonical.abs().amax(1).clamp_min(1.0)
    unit = centred / torch.where(constant, torch.ones_like(scale), scale)[:, None]
    rho = (unit @ unit.T).clamp(-1.0, 1.0)
    rho = torch.where(constant[:, None] & constant[None, :], torch.ones_like(rho), rho)
    return ((1.0 - rho) / 2.0).clamp_min(0.0).sqrt()


def epic_means(sources: Mapping[str, RewardFn], states: torch.Tensor, actions: torch.Tensor,
               coverage_states: torch.Tensor, mean_weights: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
    """[K, len(states), R]: Σ_j mean_weights[j, r]·R(x, A_j, S_j) for each state x (column r of the [m, R] weights is
    one (re)sampling of the m coverage pairs (A_j, S_j)); only obs/action/next_obs are given to the sources."""
    m, count = len(actions), len(states)
    per_chunk = max(1, chunk_size // m)
    out = torch.empty(len(sources), count, mean_weights.shape[1], dtype=torch.float64, device=mean_weights.device)
    for start in range(0, count, per_chunk):
        x = states[start:start + per_chunk]
        batch = {"obs": x[:, None].expand(len(x), m, *x.shape[1:]).reshape(len(x) * m, *x.shape[1:]),
                 "action": actions.repeat(len(x), *([1] * (actions.dim() - 1))),
                 "next_obs": coverage_states.repeat(len(x), *([1] * (coverage_states.dim() - 1)))}
        for k, (name, source) in enumerate(sources.items()):
            try:
                rewards = _call(name, source, batch).to(torch.float64).reshape(len(x), m)
            except KeyError as err:
                raise ValueError(f"EPIC evaluates reward '{name}' on transitions (s, A, S') that never happened, "
                                 f"but it reads {err}, which exists only for observed transitions; use a reward "
                                 f"that is a function of obs/action/next_obs, or method='starc_val'") from None
            out[k, start:start + len(x)] = rewards @ mean_weights
    return out


def epic_canonicalize(sources: Mapping[str, RewardFn], batch: Transitions, gamma: float, n_mean_samples: int = 512,
                      generator: torch.Generator | None = None, bootstrap: int = 0, chunk_size: int = 65536
                      ) -> torch.Tensor:
    """[K, 1 + bootstrap, n] EPIC canonical rewards of the batch's transitions: index 0 with the m coverage pairs as
    drawn, the others with the coverage pairs resampled (multinomial weights), for bootstrap intervals."""
    generator = generator or torch.Generator().manual_seed(0)
    obs, n = batch["obs"], len(batch["obs"])
    device = obs.device
    draw = torch.randint(0, n, (2, n_mean_samples), generator=generator).to(device)
    actions, coverage = batch["action"][draw[0]], obs[draw[1]]
    counts = [torch.ones(n_mean_samples)] + [
        torch.bincount(torch.randint(0, n_mean_samples, (n_mean_samples,), generator=generator),
                       minlength=n_mean_samples).to(torch.float64) for _ in range(bootstrap)]
    weights = (torch.stack(counts, 1).to(torch.float64) / n_mean_samples).to(device)  # [m, 1 + bootstrap]
    raw = evaluate_rewards(sources, batch, chunk_size)
    means = epic_means(sources, torch.cat([obs, batch["next_obs"], coverage]), actions, coverage, weights, chunk_size)
    mean_obs, mean_next, mean_coverage = means[:, :n], means[:, n:2 * n], means[:, 2 * n:]
    total = torch.einsum("kjr,jr->kr", mean_coverage, weights)
    return (raw[:, :, None] + gamma * mean_next - mean_obs - gamma * total[:, None, :]).permute(0, 2, 1)


# ---------------------------------------------------------------------------------------------------------- API
@dataclass
class RewardComparison:
    """Pairwise distances between reward sources ([K, K], in [0, 1]), with bootstrap percentile intervals."""

    names: list[str]
    distances: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    method: str
    samples: int
    gamma: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        as_list = (lambda a: None if a is None else np.round(a, 6).tolist())
        return {"method": self.method, "samples": self.samples, "gamma": self.gamma, "names": self.names,
                "distances": as_list(self.distances), "lower": as_list(self.lower), "upper": as_list(self.upper),
                "confidence": self.confidence}


def compare_rewards(sources: Mapping[str, RewardFn], transitions: Transitions, method: Method = "starc_val",
                    gamma: float = 0.99, bootstrap: int = 0, confidence: float = 0.95, device: str = "auto",
                    seed: int = 0, n_features: int = 128, bandwidth: float = 3.0, ridge: float = 1e-6,
                    n_mean_samples: int = 512, chunk_size: int = 65536) -> RewardComparison:
    """Pairwise distances between `sources` estimated on `transitions` (see the module docstring for the estimators).

    `bootstrap` > 0 adds percentile intervals at `confidence` from that many resamplings of the transitions (STARC-VAL
    refits its value function on each; EPIC also resamples its coverage pairs and keeps K·(2n + m)·(1 + bootstrap)
    means in memory). `n_features`, `bandwidth` and `ridge` set STARC-VAL's features and regularisation;
    `n_mean_samples` is EPIC's number of coverage pairs m."""
    if method not in METHODS:
        raise ValueError(f"unknown comparison method '{method}'; choose one of {METHODS}")
    if len(sources) < 2:
        raise ValueError(f"compare at least two reward sources, got {list(sources)}")
    torch_device = pick_device(device)
    batch = {k: v.to(torch_device) for k, v in transitions.items() if isinstance(v, torch.Tensor)}
    n = len(batch["obs"])
    generator = torch.Generator().manual_seed(seed)
    resamples = [torch.randint(0, n, (n,), generator=generator).to(torch_device) for _ in range(bootstrap)]
    if method == "starc_val":
        design = ValDesign.from_batch(batch, gamma, n_features, bandwidth, generator)
        rewards = evaluate_rewards(sources, batch, chunk_size)
        estimate = standardized_distances(val_canonicalize(rewards, design, ridge))
        replicates = [standardized_distances(val_canonicalize(rewards[:, i], design.subset(i), ridge))
                      for i in resamples]
    else:
        canonical = epic_canonicalize(sources, batch, gamma, n_mean_samples, generator, bootstrap, chunk_size)
        estimate = pearson_distances(canonical[:, 0])
        replicates = [pearson_distances(canonical[:, r + 1, i]) for r, i in enumerate(resamples)]
    lower = upper = None
    if replicates:
        stacked = torch.stack(replicates).cpu().numpy()
        tail = 100.0 * (1.0 - confidence) / 2.0
        lower, upper = np.percentile(stacked, tail, axis=0), np.percentile(stacked, 100.0 - tail, axis=0)
    return RewardComparison(list(sources), estimate.cpu().numpy(), lower, upper, method, n, gamma, confidence)
