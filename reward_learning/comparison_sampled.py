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
     and linear terms), solved in closed form with a small ridge on the random features (10⁻⁶ of it on the constant
     and linear terms); terminated transitions do not bootstrap (the absorbing state is worth 0, as for the agents),
     truncated ones do;
  2. the TD errors δ = r + γV(s') − V(s) are regressed (ridge) on state-action features g(s, a) ⊇ f(s), which takes
     the expectation over S'; the fitted values are the canonical rewards of the batch's transitions;
  3. the norm n is L1 (mean |c|), L2 (√mean c², the default) or L-inf (max |c|) over the batch: the tabular
     transition-weighted norms with the data's distribution of transitions (`reward_learning.comparison.reward_norm`
     with `transition_weights`), and the distance is ½·n(c1/n(c1) − c2/n(c2)).
Every step is linear in the reward, so d(R, kR) = 0 and d(R, −R) = 1 hold exactly; a constant reward (without
terminations) and shaping by a linear potential cancel to rounding, and a potential in the span of the random features
up to the ridge. Biases: V is the projected TD fixed point in the span of f, not V^π, and
a potential outside that span cancels only approximately (its residual e enters as γe(s') − e(s), small for smooth
e); the regression on g smooths the advantage and leaves some S'-redistribution noise when (s, a) are not revisited,
shrinking with more samples per feature; fitting and evaluating on the same batch adds an O(features/samples)
overfitting term; a replay buffer of several policies gives the advantage of their mixture. With one-hot features of
a finite MDP it is the exact VAL of the empirical MDP (certainty equivalence), so it converges to the tabular value.
VAL only evaluates rewards on observed transitions, so it works for the env reward and reward components too.
The defaults (128 random features, bandwidth 3, ridge 1e-6) were picked on Reacher-v5 random-policy data at γ = 0.99:
there a smooth non-linear potential leaves ≈ 0.01 after shaping, and a hard pair (full reward vs its distance term
alone) reads 0.58–0.64 over three datasets of 10k transitions and 0.60–0.63 over three of 100k. Errors in V act
like shaping, and with γ near 1 they are large next to the advantages, so use ≥ 10k transitions; the bootstrap
resamples one dataset, so it shows neither that spread between datasets nor the finite-sample bias (see
`compare_rewards`).

EPIC estimator (Gleave et al.'s sample-based canonicalisation): with m coverage samples (A_j, S_j) drawn independently
from the batch's actions and states, φ(x) = mean_j R(x, A_j, S_j) and c = R + γφ(s') − φ(s) − γ·mean_j φ(S_j); the
distance is the Pearson distance √((1 − ρ)/2) over the batch. Using the same S_j as next states and as coverage states
makes it exactly invariant to shaping. Episodes are treated as infinite (terminations ignored), as in EPIC. It
evaluates every reward (2n + m)·m times on transitions (x, A_j, S_j) that never happened, so it needs rewards that are
functions of (obs, action, next_obs) alone: the env reward and components exist only for observed transitions.

Both: a reward equivalent to 0 (a constant, pure shaping) has a canonical reward that is 0 only up to rounding; it
counts as 0 when its norm is at most `reward_learning.comparison.zero_tolerance` (of the dtype the source returned)
times the same norm of the reward itself, so its distance to any other reward is ½ (STARC) or √½ (EPIC, ρ = 0).

Tabular only (`reward_learning.comparison`): DARD and minimal-norm canonicalisations. DARD's offsets need next states
S' ~ τ(s, A) and S'' ~ τ(s', A) for actions A that were not taken at s and s', and minimal-norm spreads each
E_{S'~τ(s,a)} R over all next states of (s, a). A batch holds one next state per (s, a) taken and continuous states
are never revisited, so those samples exist only with a learned dynamics model or by resetting the simulator to each
state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from reward_learning.comparison import NORMS, Norm, zero_tolerance
from reward_learning.sources import Transitions

RewardFn = Callable[[Transitions], torch.Tensor]
Method = Literal["starc_val", "epic"]
METHODS: tuple[Method, ...] = ("starc_val", "epic")  # DARD and minimal-norm are tabular only (module docstring)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is cuda when torch sees a GPU, else cpu; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_rewards(sources: Mapping[str, RewardFn], batch: Transitions, chunk_size: int = 65536
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """([K, n] float64 rewards of the K sources on `batch`, evaluated in chunks of `chunk_size` transitions; [K]
    `zero_tolerance` of the dtype each source returned)."""
    n = len(batch["obs"])
    rows, tolerances = [], []
    for name, source in sources.items():
        parts = [_call(name, source, {k: v[start:start + chunk_size] for k, v in batch.items()})
                 for start in range(0, n, chunk_size)]
        dtype = parts[0].dtype if parts[0].is_floating_point() else torch.float64
        tolerances.append(zero_tolerance(torch.finfo(dtype).eps))
        rows.append(torch.cat(parts).to(torch.float64))
    rewards = torch.stack(rows)
    return rewards, torch.tensor(tolerances, dtype=torch.float64, device=rewards.device)


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

    @property
    def n_linear(self) -> int:
        """How many leading columns are the constant and linear terms."""
        return 1 + len(self.mean)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self._standardize(x)
        waves = math.sqrt(2.0 / self.weight.shape[1]) * torch.cos(x @ self.weight + self.phase)
        return torch.cat([torch.ones(len(x), 1, dtype=x.dtype, device=x.device), x, waves], dim=1)


@dataclass
class ValDesign:
    """The reward-independent part of the STARC-VAL estimate: f(s), γ·(1 − terminated)·f(s') and g(s, a), and how
    many leading columns of f and g are constant and linear terms."""

    state: torch.Tensor
    discounted_next: torch.Tensor
    state_action: torch.Tensor
    state_linear: int
    state_action_linear: int

    @classmethod
    def from_batch(cls, batch: Transitions, gamma: float, n_features: int = 128, bandwidth: float = 3.0,
                   generator: torch.Generator | None = None) -> ValDesign:
        """Fit the feature maps on the batch: f on obs and next_obs; g = [1, s̃, ã, waves of s̃, waves of (s̃, ã)]."""
        generator = generator or torch.Generator().manual_seed(0)
        n = len(batch["obs"])
        obs, next_obs = (batch[k].reshape(n, -1).to(torch.float64) for k in ("obs", "next_obs"))
        obs_action = torch.cat([obs, batch["action"].reshape(n, -1).to(obs.device, torch.float64)], 1)
        states = FourierFeatures(torch.cat([obs, next_obs]), n_features, bandwidth, generator)
        pairs = FourierFeatures(obs_action, n_features, bandwidth, generator)
        continues = torch.ones(n, dtype=torch.float64, device=obs.device)
        if "terminated" in batch:
            continues = continues - batch["terminated"].reshape(n).to(obs.device, torch.float64)
        f, sa = states(obs), pairs(obs_action)
        k, j = states.n_linear, pairs.n_linear
        g = torch.cat([f[:, :k], sa[:, k:j], f[:, k:], sa[:, j:]], 1)  # sa's constant and s̃ repeat f's
        return cls(f, gamma * continues[:, None] * states(next_obs), g, k, j)

    def subset(self, index: torch.Tensor) -> ValDesign:
        """The design of the transitions at `index` (a bootstrap resample)."""
        return ValDesign(self.state[index], self.discounted_next[index], self.state_action[index], self.state_linear,
                         self.state_action_linear)


LINEAR_RIDGE = 1e-6  # the constant and linear terms' share of the ridge


def _ridge_solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: float, n_linear: int) -> torch.Tensor:
    """Solve (gram + Λ)w = rhs with Λ = ridge·mean|diag(gram)| on the random features and `LINEAR_RIDGE` times that
    on the `n_linear` leading constant and linear ones: almost free, so a constant reward and shaping by a linear
    potential cancel to rounding, yet positive, so collinear inputs (one-hot states) stay solvable."""
    scale = ridge * float(torch.diagonal(gram).abs().mean().clamp_min(1e-12))
    penalty = torch.full((len(gram),), scale, dtype=gram.dtype, device=gram.device)
    penalty[:n_linear] *= LINEAR_RIDGE
    return torch.linalg.solve(gram + torch.diag(penalty), rhs)


def val_canonicalize(rewards: torch.Tensor, design: ValDesign, ridge: float = 1e-6) -> torch.Tensor:
    """[K, n] STARC-VAL canonical rewards (advantage estimates) of [K, n] rewards on the design's transitions."""
    f, f_next, g = design.state, design.discounted_next, design.state_action
    n, targets = len(f), rewards.T
    weights = _ridge_solve(f.T @ (f - f_next) / n, f.T @ targets / n, ridge, design.state_linear)  # LSTD(0): V = f·w
    td_errors = targets + (f_next - f) @ weights
    advantage = _ridge_solve(g.T @ g / n, g.T @ td_errors / n, ridge, design.state_action_linear)
    return (g @ advantage).T


def sample_norms(values: torch.Tensor, norm: Norm = "l2") -> torch.Tensor:
    """[K] norms of the rows of [K, n] values over the samples: mean |x| (l1), √mean x² (l2) or max |x| (linf)."""
    if norm == "l1":
        return values.abs().mean(1)
    if norm == "l2":
        return values.pow(2).mean(1).sqrt()
    if norm == "linf":
        return values.abs().amax(1)
    raise ValueError(f"unknown norm '{norm}'; choose one of {NORMS}")


def vanishing(canonical: torch.Tensor, rewards: torch.Tensor, tolerance: torch.Tensor, norm: Norm = "l2"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """([K] norms of the canonical rows, [K] whether each is rounding noise: at most `tolerance` times the same norm
    of the row's reward)."""
    sizes = sample_norms(canonical, norm)
    return sizes, sizes <= tolerance * sample_norms(rewards, norm)


def standardized_distances(canonical: torch.Tensor, rewards: torch.Tensor, tolerance: torch.Tensor,
                           norm: Norm = "l2") -> torch.Tensor:
    """[K, K] distances ½·n(s_i − s_j) between s = c/n(c) (0 when c is 0 up to rounding of its [K, n] `rewards`, see
    `vanishing`), with n a `sample_norms` norm."""
    sizes, zero = vanishing(canonical, rewards, tolerance, norm)
    unit = torch.where(zero[:, None], 0.0, canonical / sizes.clamp_min(1e-300)[:, None])
    return torch.stack([0.5 * sample_norms(unit - row, norm) for row in unit])


# -------------------------------------------------------------------------------------------------------- EPIC
def pearson_distances(canonical: torch.Tensor, rewards: torch.Tensor, tolerance: torch.Tensor) -> torch.Tensor:
    """[K, K] Pearson distances √((1 − ρ)/2) between rows over samples; a row that is constant up to rounding of its
    [K, n] `rewards` (see `vanishing`) has ρ = 0 with others and ρ = 1 with another such row."""
    centred = canonical - canonical.mean(1, keepdim=True)
    scale, constant = vanishing(centred, rewards, tolerance)
    unit = torch.where(constant[:, None], 0.0, centred / scale.clamp_min(1e-300)[:, None])  # mean square 1 or 0
    rho = (unit @ unit.T / centred.shape[1]).clamp(-1.0, 1.0)
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


def epic_canonicalize(sources: Mapping[str, RewardFn], rewards: torch.Tensor, batch: Transitions, gamma: float,
                      n_mean_samples: int = 512, generator: torch.Generator | None = None, bootstrap: int = 0,
                      chunk_size: int = 65536) -> torch.Tensor:
    """[K, 1 + bootstrap, n] EPIC canonical rewards of the batch's transitions, given the sources' [K, n] `rewards`
    on them: index 0 with the m coverage pairs as drawn, the others with the coverage pairs resampled (multinomial
    weights), for bootstrap intervals."""
    generator = generator or torch.Generator().manual_seed(0)
    obs, n = batch["obs"], len(batch["obs"])
    device = obs.device
    draw = torch.randint(0, n, (2, n_mean_samples), generator=generator).to(device)
    actions, coverage = batch["action"][draw[0]], obs[draw[1]]
    counts = [torch.ones(n_mean_samples)] + [
        torch.bincount(torch.randint(0, n_mean_samples, (n_mean_samples,), generator=generator),
                       minlength=n_mean_samples).to(torch.float64) for _ in range(bootstrap)]
    weights = (torch.stack(counts, 1).to(torch.float64) / n_mean_samples).to(device)  # [m, 1 + bootstrap]
    means = epic_means(sources, torch.cat([obs, batch["next_obs"], coverage]), actions, coverage, weights, chunk_size)
    mean_obs, mean_next, mean_coverage = means[:, :n], means[:, n:2 * n], means[:, 2 * n:]
    total = torch.einsum("kjr,jr->kr", mean_coverage, weights)
    return (rewards[:, :, None] + gamma * mean_next - mean_obs - gamma * total[:, None, :]).permute(0, 2, 1)


# ---------------------------------------------------------------------------------------------------------- API
@dataclass
class RewardComparison:
    """Pairwise distances between reward sources ([K, K], in [0, 1]), with basic bootstrap intervals (see
    `basic_intervals`); `norm` is STARC-VAL's norm (EPIC's Pearson distance is an L2 one)."""

    names: list[str]
    distances: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    method: str
    samples: int
    gamma: float
    confidence: float
    norm: str = "l2"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        as_list = (lambda a: None if a is None else np.round(a, 6).tolist())
        return {"method": self.method, "norm": self.norm, "samples": self.samples, "gamma": self.gamma,
                "names": self.names, "distances": as_list(self.distances), "lower": as_list(self.lower),
                "upper": as_list(self.upper), "confidence": self.confidence}


def basic_intervals(estimate: np.ndarray, replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse-percentile) bootstrap intervals [2θ̂ − q_hi, 2θ̂ − q_lo] of distances θ̂ from [B, ...] replicates,
    q the (1 ∓ confidence)/2 quantiles, clipped to the distances' range [0, 1].

    Refitting on a resample (with duplicates) moves a replicate away from θ̂ the way fitting on the batch moved θ̂ away
    from the truth, so reflecting the replicates corrects that shift to first order, where percentile intervals
    would add it (and sit above a near-zero estimate). When the replicates all lie on one side of θ̂, the interval
    may exclude θ̂: the shift is larger than the spread."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    return np.clip(2 * estimate - high, 0.0, 1.0), np.clip(2 * estimate - low, 0.0, 1.0)


def compare_rewards(sources: Mapping[str, RewardFn], transitions: Transitions, method: Method = "starc_val",
                    gamma: float = 0.99, bootstrap: int = 0, confidence: float = 0.95, device: str = "auto",
                    seed: int = 0, n_features: int = 128, bandwidth: float = 3.0, ridge: float = 1e-6,
                    n_mean_samples: int = 512, chunk_size: int = 65536, norm: Norm = "l2") -> RewardComparison:
    """Pairwise distances between `sources` estimated on `transitions` (see the module docstring for the estimators;
    DARD and minimal-norm are tabular only, in `reward_learning.comparison`).

    `bootstrap` > 0 adds `basic_intervals` at `confidence` from that many resamplings of the transitions (STARC-VAL
    refits its value function on each; EPIC also resamples its coverage pairs and keeps K·(2n + m)·(1 + bootstrap)
    means in memory). They show the sampling variance of the estimate given the transitions' distribution, with the
    refitting shift corrected to first order; not the bias of STARC-VAL's value fit (V restricted to the span of
    its features), nor a mismatch between that distribution and the one the distance should weight (e.g. a
    random policy's states vs a trained agent's). `n_features`, `bandwidth` and `ridge` set STARC-VAL's features
    and regularisation, `norm` its norm over the samples ("l1", "l2", "linf"); `n_mean_samples` is EPIC's number
    of coverage pairs m."""
    if method not in METHODS:
        raise ValueError(f"unknown comparison method '{method}'; choose one of {METHODS} (DARD and minimal-norm "
                         f"are tabular only: reward_learning.comparison)")
    if norm not in NORMS or (method == "epic" and norm != "l2"):
        raise ValueError(f"norm '{norm}': STARC-VAL takes one of {NORMS}; EPIC's Pearson distance is an L2 one")
    if len(sources) < 2:
        raise ValueError(f"compare at least two reward sources, got {list(sources)}")
    torch_device = pick_device(device)
    batch = {k: v.to(torch_device) for k, v in transitions.items() if isinstance(v, torch.Tensor)}
    n = len(batch["obs"])
    generator = torch.Generator().manual_seed(seed)
    resamples = [torch.randint(0, n, (n,), generator=generator).to(torch_device) for _ in range(bootstrap)]
    rewards, tolerance = evaluate_rewards(sources, batch, chunk_size)
    if method == "starc_val":
        design = ValDesign.from_batch(batch, gamma, n_features, bandwidth, generator)
        estimate = standardized_distances(val_canonicalize(rewards, design, ridge), rewards, tolerance, norm)
        replicates = [standardized_distances(val_canonicalize(rewards[:, i], design.subset(i), ridge), rewards[:, i],
                                             tolerance, norm) for i in resamples]
    else:
        canonical = epic_canonicalize(sources, rewards, batch, gamma, n_mean_samples, generator, bootstrap,
                                      chunk_size)
        estimate = pearson_distances(canonical[:, 0], rewards, tolerance)
        replicates = [pearson_distances(canonical[:, r + 1, i], rewards[:, i], tolerance)
                      for r, i in enumerate(resamples)]
    estimate = estimate.cpu().numpy()
    lower, upper = (basic_intervals(estimate, torch.stack(replicates).cpu().numpy(), confidence) if replicates
                    else (None, None))
    return RewardComparison(list(sources), estimate, lower, upper, method, n, gamma, confidence, norm)
