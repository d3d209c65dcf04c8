"""Reward comparison on finite MDPs, computed exactly: STARC distances (Skalse et al., ICLR 2024) and the EPIC
(Gleave et al., 2021) and DARD (Wulfe et al., 2022) baselines.

A reward is a table `R[s, a, s']`; the environment is a `TabularMDP` (transitions `τ[s, a, s']`, discount γ, and
coverage distributions D_S, D_A, uniform by default). Two rewards are *equivalent* when they differ only by potential
shaping `γΦ(s') − Φ(s)` and S'-redistribution (equal `E_{S'~τ(s,a)} R(s, a, S')` for every (s, a)); positive scaling
keeps the order of policies too. A STARC distance removes all three:

    d(R1, R2) = m(s(R1), s(R2)),   s(R) = c(R) / n(c(R))   (s(R) = c(R) when n(c(R)) = 0),

with c a canonicalisation (linear, c(R) equivalent to R, c(R1) = c(R2) iff R1 and R2 are equivalent), n a norm and
m(x, y) = ½·n'(x − y) for a norm n' (by default n' = n). With n' = n the ½ puts every distance in [0, 1]: d(R, kR) = 0
for k > 0, and d(R, −R) = 1 exactly (standardised vectors have norm 1, so n(x − y) ≤ 2 with equality for y = −x).
A reward equivalent to 0 (a constant, pure shaping) has c(R) = 0 only up to rounding, so n(c(R)) counts as 0 when it
is at most `zero_tolerance` times n(R) (s(R) = 0 then): otherwise the noise would be scaled up to an arbitrary unit
vector. Its distance to any other reward R' is ½·n'(s(R')), ½ with n' = n.

Canonicalisations: "val" (value-adjusted levelling, STARC's), "minimal" (the equivalent reward of least L2 norm, solved
exactly) and "none"; "epic" and "dard" are the canonicalisations of EPIC and DARD, which are invariant to shaping but
NOT to S'-redistribution, so they are not canonicalisations in STARC's sense (a redistributed reward gets a non-zero
distance). Norms: "l1", "l2", "linf", each optionally weighted by `transition_weights` (τ(s,a,s')·D_S(s)·D_A(a)).

Also here: a random-MDP generator (sparse-softmax transitions, Gaussian rewards with sparse/scaled/shifted variants,
shaped and redistributed versions of a reward) and exact regret (value iteration for optimal policies, a linear solve
for policy values) for checking how well a distance predicts regret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Canonicalization = Literal["none", "epic", "dard", "val", "minimal"]
Norm = Literal["l1", "l2", "linf"]
RewardKind = Literal["gaussian", "sparse", "scaled", "shifted"]
CANONICALIZATIONS: tuple[Canonicalization, ...] = ("none", "epic", "dard", "val", "minimal")
NORMS: tuple[Norm, ...] = ("l1", "l2", "linf")
REWARD_KINDS: tuple[RewardKind, ...] = ("gaussian", "sparse", "scaled", "shifted")


@dataclass
class TabularMDP:
    """Transitions τ[s, a, s'] (rows sum to 1), discount γ, coverage distributions D_S and D_A (uniform if None) and
    the initial-state distribution μ0 used for returns (uniform if None)."""

    transitions: np.ndarray
    gamma: float
    state_dist: np.ndarray | None = None
    action_dist: np.ndarray | None = None
    initial_dist: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.transitions = np.asarray(self.transitions, dtype=np.float64)
        n_states, n_actions, n_next = self.transitions.shape
        if n_next != n_states:
            raise ValueError(f"transitions must have shape [S, A, S], got {self.transitions.shape}")
        if not np.allclose(self.transitions.sum(-1), 1.0) or (self.transitions < 0).any():
            raise ValueError("every transitions[s, a] must be a probability distribution over next states")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1) for the values to exist, got {self.gamma}")
        self.state_dist = _distribution(self.state_dist, n_states, "state_dist")
        self.action_dist = _distribution(self.action_dist, n_actions, "action_dist")
        self.initial_dist = _distribution(self.initial_dist, n_states, "initial_dist")

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]


def _distribution(values: np.ndarray | None, size: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(size, 1.0 / size)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (size,) or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise ValueError(f"{name} must be a probability vector of length {size}")
    return values


# ------------------------------------------------------------------------------------------------ values, policies
def uniform_policy(mdp: TabularMDP) -> np.ndarray:
    """π[s, a] = 1/|A|, VAL's default policy."""
    return np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)


def policy_value(reward: np.ndarray, mdp: TabularMDP, policy: np.ndarray | None = None) -> np.ndarray:
    """V^π[s] from the linear system (I − γP_π)V = r_π, solved exactly (policy [S, A]; default uniform)."""
    policy = uniform_policy(mdp) if policy is None else policy
    expected_reward = np.einsum("sa,sax,sax->s", policy, mdp.transitions, reward)
    state_transitions = np.einsum("sa,sax->sx", policy, mdp.transitions)
    return np.linalg.solve(np.eye(mdp.n_states) - mdp.gamma * state_transitions, expected_reward)


def optimal_policy(reward: np.ndarray, mdp: TabularMDP, tol: float = 1e-10, max_iterations: int = 100_000
                   ) -> np.ndarray:
    """A deterministic optimal policy (one-hot [S, A]) by value iteration to a sup-norm change below `tol`."""
    value = np.zeros(mdp.n_states)
    for _ in range(max_iterations):
        q = np.einsum("sax,sax->sa", mdp.transitions, reward + mdp.gamma * value)
        new_value = q.max(1)
        done = np.abs(new_value - value).max() < tol
        value = new_value
        if done:
            break
    return np.eye(mdp.n_actions)[q.argmax(1)]


def policy_return(reward: np.ndarray, mdp: TabularMDP, policy: np.ndarray) -> float:
    """J(π) = E_{s0~μ0} V^π(s0)."""
    return float(mdp.initial_dist @ policy_value(reward, mdp, policy))


def normalized_regret(true_reward: np.ndarray, policy: np.ndarray, mdp: TabularMDP) -> float:
    """(J(π*) − J(π)) / (J(π*) − J(π_worst)) under `true_reward`: 0 for an optimal policy, 1 for the worst one
    (0 when every policy has the same return)."""
    best = policy_return(true_reward, mdp, optimal_policy(true_reward, mdp))
    worst = policy_return(true_reward, mdp, optimal_policy(-true_reward, mdp))
    span = best - worst
    return 0.0 if span <= 1e-12 * max(1.0, abs(best)) else (best - policy_return(true_reward, mdp, policy)) / span


# ------------------------------------------------------------------------------------------------ canonicalisations
def epic_canonical(reward: np.ndarray, mdp: TabularMDP) -> np.ndarray:
    """EPIC: R + γφ(s') − φ(s) − γE[φ(S)], φ(x) = E[R(x, A, S')] with A ~ D_A, S, S' ~ D_S independent of τ.

    Removes potential shaping exactly, but ignores the transitions, so it is not invariant to S'-redistribution (not
    a canonicalisation in STARC's sense)."""
    phi = np.einsum("xay,a,y->x", reward, mdp.action_dist, mdp.state_dist)
    return reward + mdp.gamma * phi[None, None, :] - phi[:, None, None] - mdp.gamma * (mdp.state_dist @ phi)


def dard_canonical(reward: np.ndarray, mdp: TabularMDP) -> np.ndarray:
    """DARD: R + γΦ(s') − Φ(s) − γE[R(S', A, S'')], Φ(x) = E[R(x, A, S')], A ~ D_A, S' ~ τ(s, A), S'' ~ τ(s', A).

    Uses the transitions (so its offsets stay on plausible transitions) and removes potential shaping exactly, but
    is still not invariant to S'-redistribution (not a canonicalisation in STARC's sense)."""
    tau, d_a = mdp.transitions, mdp.action_dist
    phi = np.einsum("xay,a,xay->x", reward, d_a, tau)
    offset = np.einsum("a,sax,xay,tay->st", d_a, tau, reward, tau, optimize=True)  # E[R(S', A, S'') | s, s']
    return reward + mdp.gamma * phi[None, None, :] - phi[:, None, None] - mdp.gamma * offset[:, None, :]


def val_canonical(reward: np.ndarray, mdp: TabularMDP, policy: np.ndarray | None = None) -> np.ndarray:
    """Value-adjusted levelling (STARC): E_{S'~τ(s,a)}[R(s, a, S') + γV^π(S')] − V^π(s), the same for every s'.

    This is the advantage A^π(s, a) of a fixed policy π (default uniform), with V^π solved exactly. Shaping by Φ moves
    V^π by −Φ and redistribution leaves the expectation unchanged, so both cancel."""
    value = policy_value(reward, mdp, policy)
    advantage = np.einsum("sax,sax->sa", mdp.transitions, reward + mdp.gamma * value) - value[:, None]
    return np.broadcast_to(advantage[:, :, None], reward.shape).copy()


def minimal_canonical(reward: np.ndarray, mdp: TabularMDP, weights: np.ndarray | None = None) -> np.ndarray:
    """The reward of least (weighted) L2 norm equivalent to `reward`, solved exactly rather than by gradient descent.

    Redistribution is free per (s, a): the least-norm row with expectation e(s, a) under τ is e·(τ/w)/Σ(τ²/w), of
    squared norm e²/Σ(τ²/w). Shaping adds γ(τΦ)(s, a) − Φ(s) to e, so Φ solves a weighted linear least-squares problem
    with |S| unknowns (full rank for γ < 1). The map is the orthogonal projection along the equivalence class, hence a
    canonicalisation. `weights` must be positive wherever τ is (None: unweighted)."""
    tau, gamma = mdp.transitions, mdp.gamma
    weights = np.ones_like(tau) if weights is None else np.asarray(weights, dtype=np.float64)
    if (weights[tau > 0] <= 0).any():
        raise ValueError("minimal_canonical needs positive weights on every possible transition")
    tau_over_w = np.divide(tau, weights, out=np.zeros_like(tau), where=tau > 0)
    spread = (tau * tau_over_w).sum(-1)  # Σ_s' τ²/w > 0 for every (s, a)
    expected = (tau * reward).sum(-1)
    design = gamma * tau - np.eye(mdp.n_states)[:, None, :]  # row (s, a): γτ(s, a, ·) − e_s
    scale = 1.0 / np.sqrt(spread)
    potential = np.linalg.lstsq((design * scale[..., None]).reshape(-1, mdp.n_states),
                                (-expected * scale).reshape(-1), rcond=None)[0]
    level = expected + gamma * (tau @ potential) - potential[:, None]
    return level[..., None] * tau_over_w / spread[..., None]


def canonicalize(reward: np.ndarray, mdp: TabularMDP, method: Canonicalization = "val",
                 policy: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """c(R) for a canonicalisation name; `policy` is VAL's π, `weights` the L2 weights of "minimal"."""
    reward = np.asarray(reward, dtype=np.float64)
    if reward.shape != mdp.transitions.shape:
        raise ValueError(f"reward has shape {reward.shape}, the MDP's transitions {mdp.transitions.shape}")
    if method == "none":
        return reward
    if method == "epic":
        return epic_canonical(reward, mdp)
    if method == "dard":
        return dard_canonical(reward, mdp)
    if method == "val":
        return val_canonical(reward, mdp, policy)
    if method == "minimal":
        return minimal_canonical(reward, mdp, weights)
    raise ValueError(f"unknown canonicalisation '{method}'; choose one of {CANONICALIZATIONS}")


# ------------------------------------------------------------------------------------------------ norms, distances
def transition_weights(mdp: TabularMDP) -> np.ndarray:
    """w(s, a, s') = D_S(s)·D_A(a)·τ(s, a, s'): how often a transition is seen under the coverage distributions.

    The STARC paper weights by τ alone; with uniform coverage the two differ by the constant |S||A|, which cancels
    in STARC distances (standardisation divides by the same norm). This choice is also what a sample-based estimate
    over transitions (s, a) ~ D, s' ~ τ(s, a) converges to."""
    return mdp.state_dist[:, None, None] * mdp.action_dist[None, :, None] * mdp.transitions


def reward_norm(x: np.ndarray, norm: Norm = "l2", weights: np.ndarray | None = None) -> float:
    """(Σ w|x|^p)^(1/p) for l1/l2; for linf the max of |x| where w > 0 (the weights' support, not |x|·w: scaling
    entries by their probability would not be a norm of the reward on the support)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.broadcast_to(weights, x.shape)
    if norm == "l1":
        return float((w * np.abs(x)).sum())
    if norm == "l2":
        return float(np.sqrt((w * x * x).sum()))
    if norm == "linf":
        support = np.abs(x)[w > 0]
        return float(support.max()) if support.size else 0.0
    raise ValueError(f"unknown norm '{norm}'; choose one of {NORMS}")


def zero_tolerance(eps: float) -> float:
    """The relative size below which a canonical reward is rounding noise, for rewards given with machine epsilon
    `eps`: n(c(R)) ≤ tol·n(R) counts as n(c(R)) = 0, with tol = max(1e-6, 8·eps). Float32 rewards carry ~1e-7 rounding
    (relative to terms such as Φ that cancel). Float64 ones pass through float64 linear algebra whose rounding grows
    with 1/(1 − γ), the conditioning of the solves and the sample count: for the sample-based STARC-VAL estimate
    (`comparison_sampled`) a constant reward's canonical reward reaches ~6e-8 of the reward in L-inf (γ 0.9, 100k
    samples; ~1e-14 for the exact tabular ones). So one floor serves both, and 8·eps covers half precision. A
    genuine c(R) below a millionth of n(R) (a huge constant or shaping term plus a tiny signal) counts as 0 too."""
    return max(1e-6, 8.0 * eps)


def float_eps(values: np.ndarray) -> float:
    """Machine epsilon of an array's float dtype (float64's for integer or boolean arrays, which hold exact values)."""
    dtype = np.asarray(values).dtype
    return float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)


def standardize(canonical: np.ndarray, norm: Norm = "l2", weights: np.ndarray | None = None,
                reward: np.ndarray | None = None) -> np.ndarray:
    """s(R) = c(R)/n(c(R)), or 0 when c(R) is 0: n(c(R)) ≤ `zero_tolerance`·n(R) for the `reward` R that c came from
    (a reward equivalent to 0, up to rounding, which must not be scaled up); without `reward` only an exact 0."""
    size = reward_norm(canonical, norm, weights)
    noise = 0.0 if reward is None else zero_tolerance(float_eps(reward)) * reward_norm(reward, norm, weights)
    return canonical / size if size > noise else np.zeros_like(canonical)


def starc_distance(reward1: np.ndarray, reward2: np.ndarray, mdp: TabularMDP, canonicalization: Canonicalization
                   = "val", norm: Norm = "l2", weighted: bool = False, policy: np.ndarray | None = None,
                   distance: Norm | None = None) -> float:
    """d(R1, R2) = ½·m(s(R1) − s(R2)), with s normalised by `norm` and m the `distance` norm (default: `norm`), both
    weighted by `transition_weights` if `weighted`. In [0, 1] when m = n; another m gives an equivalent metric (all
    norms are on a finite space) with another scale, e.g. d(R, −R) = m(s(R)).

    With "epic" or "dard" this is the STARC-shaped distance on those canonicalisations (not a STARC metric)."""
    weights = transition_weights(mdp) if weighted else None
    standardized = [standardize(canonicalize(r, mdp, canonicalization, policy, weights), norm, weights, r)
                    for r in (reward1, reward2)]
    return 0.5 * reward_norm(standardized[0] - standardized[1], distance or norm, weights)


def pearson_distance(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                     rewards: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """√((1 − ρ)/2) for the weighted Pearson correlation ρ of x and y, in [0, 1]. x (or y) counts as constant when its
    weighted standard deviation is at most `zero_tolerance` times the weighted L2 norm of the reward it came from
    (`rewards`, default x and y themselves); a constant has ρ = 0 with anything else and ρ = 1 with another one."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones(x.size) if weights is None else np.broadcast_to(weights, x.shape).ravel()
    x, y, w = x.ravel(), y.ravel(), w / w.sum()
    centred = [v - w @ v for v in (x, y)]
    spread = [np.sqrt(w @ (c * c)) for c in centred]
    constant = [size <= zero_tolerance(float_eps(r)) * np.sqrt(w @ np.ravel(r) ** 2)
                for size, r in zip(spread, rewards or (x, y), strict=True)]
    if any(constant):
        rho = 1.0 if all(constant) else 0.0
    else:
        rho = float(np.clip(centred[0] @ (w * centred[1]) / (spread[0] * spread[1]), -1.0, 1.0))
    return float(np.sqrt((1.0 - rho) / 2.0))


def epic_distance(reward1: np.ndarray, reward2: np.ndarray, mdp: TabularMDP, weights: np.ndarray | None = None
                  ) -> float:
    """EPIC: the Pearson distance of the EPIC-canonicalised rewards over transitions weighted by `weights` (default
    `transition_weights`, as the sample-based estimate over a batch of transitions). The EPIC canonical reward has
    mean 0 under D_S×D_A×D_S, and the Pearson distance equals ½ the weighted L2 distance of centred unit vectors."""
    weights = transition_weights(mdp) if weights is None else weights
    return pearson_distance(epic_canonical(reward1, mdp), epic_canonical(reward2, mdp), weights, (reward1, reward2))


# ------------------------------------------------------------------------------------------------ random MDPs
def random_mdp(rng: np.random.Generator, n_states: int = 32, n_actions: int = 4, gamma: float = 0.95,
               sparsity: float = 0.5, temperature: float = 1.0) -> TabularMDP:
    """Sparse-softmax transitions: Gaussian logits / temperature, a random `sparsity` share of next states made
    impossible per (s, a) (never all of them); uniform coverage and initial distributions."""
    logits = rng.normal(size=(n_states, n_actions, n_states)) / temperature
    impossible = rng.random(logits.shape) < sparsity
    impossible[np.arange(n_states)[:, None], np.arange(n_actions)[None, :], logits.argmax(-1)] = False
    logits[impossible] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return TabularMDP(weights / weights.sum(-1, keepdims=True), gamma)


def random_reward(rng: np.random.Generator, n_states: int, n_actions: int, kind: RewardKind = "gaussian"
                  ) -> np.ndarray:
    """An iid N(0, 1) reward R[s, a, s']; "sparse" keeps ~10% of the entries, "scaled" multiplies by 10^U(−1, 1),
    "shifted" adds a N(0, 5²) constant."""
    reward = rng.normal(size=(n_states, n_actions, n_states))
    if kind == "sparse":
        reward *= rng.random(reward.shape) < 0.1
    elif kind == "scaled":
        reward *= 10.0 ** rng.uniform(-1.0, 1.0)
    elif kind == "shifted":
        reward += rng.normal(scale=5.0)
    elif kind != "gaussian":
        raise ValueError(f"unknown reward kind '{kind}'; choose one of {REWARD_KINDS}")
    return reward


def shaped_reward(reward: np.ndarray, potential: np.ndarray, gamma: float) -> np.ndarray:
    """R(s, a, s') + γΦ(s') − Φ(s): equivalent to R."""
    return reward + gamma * potential[None, None, :] - potential[:, None, None]


def redistributed_reward(reward: np.ndarray, mdp: TabularMDP, rng: np.random.Generator, scale: float = 1.0
                         ) -> np.ndarray:
    """R + Z with Z = N − E_{S'~τ(s,a)}[N(s, a, S')] for Gaussian noise N: E_τ[Z] = 0, so it is equivalent to R
    (entries at impossible next states change freely)."""
    noise = rng.normal(scale=scale, size=reward.shape)
    return reward + noise - (mdp.transitions * noise).sum(-1, keepdims=True)
