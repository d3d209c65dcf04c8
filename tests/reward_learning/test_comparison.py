"""STARC, EPIC and DARD reward distances: the oracles that follow from their definitions, exactly on finite MDPs and
approximately from samples (converging to the exact value as samples grow)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from reward_learning import ComponentReward, EnvReward
from reward_learning import comparison as tab
from reward_learning.comparison_sampled import basic_intervals, compare_rewards, pick_device
from reward_learning.models import LearnedReward, RewardEnsemble, RewardModelConfig

STARC = ("val", "minimal")  # canonicalisations in STARC's sense
SHAPING_ONLY = ("epic", "dard")  # invariant to shaping, not to S'-redistribution


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    mdp = tab.random_mdp(rng, n_states=12, n_actions=3, gamma=0.9)
    return rng, mdp, tab.random_reward(rng, 12, 3)


def all_metrics():
    """(canonicalisation, norm, weighted) for every STARC-shaped distance."""
    return itertools.product(tab.CANONICALIZATIONS, tab.NORMS, (False, True))


def test_potential_shaping_and_positive_scaling_give_distance_zero(setup):
    rng, mdp, reward = setup
    shaped = tab.shaped_reward(reward, rng.normal(scale=3.0, size=mdp.n_states), mdp.gamma)
    for canon, norm, weighted in all_metrics():
        for k in (0.1, 7.0):
            assert tab.starc_distance(reward, k * reward, mdp, canon, norm, weighted) == pytest.approx(0, abs=1e-9)
        if canon != "none":
            assert tab.starc_distance(reward, shaped, mdp, canon, norm, weighted) == pytest.approx(0, abs=1e-9)
    assert tab.epic_distance(reward, 3 * shaped, mdp) == pytest.approx(0, abs=1e-6)
    assert tab.starc_distance(reward, shaped, mdp, "none") > 0.1


def test_only_starc_canonicalisations_ignore_s_prime_redistribution(setup):
    rng, mdp, reward = setup
    redistributed = tab.redistributed_reward(reward, mdp, rng)
    assert np.allclose((mdp.transitions * (redistributed - reward)).sum(-1), 0)  # same expectation under τ
    for norm, weighted in itertools.product(tab.NORMS, (False, True)):
        for canon in STARC:
            assert tab.starc_distance(reward, redistributed, mdp, canon, norm, weighted) == pytest.approx(0, abs=1e-9)
        for canon in SHAPING_ONLY:
            assert tab.starc_distance(reward, redistributed, mdp, canon, norm, weighted) > 0.05
    assert tab.epic_distance(reward, redistributed, mdp) > 0.05


def test_negation_is_the_maximal_distance_one(setup):
    _, mdp, reward = setup
    for canon, norm, weighted in all_metrics():
        assert tab.starc_distance(reward, -reward, mdp, canon, norm, weighted) == pytest.approx(1.0)
    assert tab.epic_distance(reward, -reward, mdp) == pytest.approx(1.0)


def test_distances_are_symmetric_and_satisfy_the_triangle_inequality(setup):
    rng, mdp, _ = setup
    for _ in range(4):
        triple = [tab.random_reward(rng, mdp.n_states, mdp.n_actions, kind) for kind in rng.choice(tab.REWARD_KINDS, 3)]
        for canon, norm, weighted in all_metrics():
            d = {(i, j): tab.starc_distance(triple[i], triple[j], mdp, canon, norm, weighted)
                 for i in range(3) for j in range(3)}
            assert all(0 <= v <= 1 + 1e-12 for v in d.values())
            assert d[0, 1] == pytest.approx(d[1, 0]) and d[0, 0] == pytest.approx(0, abs=1e-12)
            for i, j, k in itertools.permutations(range(3)):
                assert d[i, k] <= d[i, j] + d[j, k] + 1e-12


def test_rewards_equivalent_to_zero_are_half_way_from_every_reward(setup):
    """A constant and a pure shaping reward have c(R) = 0 up to rounding: s(R) = c(R) ≈ 0, so d = ½·n(s(R')) = ½
    from any other R' and 0 between them (rounding must not be scaled up to a unit vector), float32 tables too."""
    rng, mdp, reward = setup
    potential = rng.normal(scale=3.0, size=mdp.n_states)
    constant = np.full(reward.shape, 2.5)
    shaping = tab.shaped_reward(np.zeros(reward.shape), potential, mdp.gamma)
    shaping32 = tab.shaped_reward(np.zeros(reward.shape, np.float32), potential.astype(np.float32),
                                  np.float32(mdp.gamma))
    assert shaping32.dtype == np.float32
    for canon, norm, weighted in all_metrics():
        if canon == "none":
            continue
        for zero in (constant, shaping, constant.astype(np.float32), shaping32):
            assert tab.starc_distance(zero, reward, mdp, canon, norm, weighted) == pytest.approx(0.5, abs=1e-6)
        for zero in (shaping, shaping32):
            assert tab.starc_distance(constant, zero, mdp, canon, norm, weighted) == pytest.approx(0, abs=1e-6)
    for zero in (constant, shaping, shaping32):
        assert tab.epic_distance(zero, reward, mdp) == pytest.approx(np.sqrt(0.5), abs=1e-6)  # ρ = 0
        assert tab.epic_distance(zero, constant, mdp) == pytest.approx(0, abs=1e-6)


def test_epic_and_dard_canonicalisations_match_their_definitions():
    """Brute force over every (s, a, s') and every expectation term on a 3-state, 2-action MDP with non-uniform
    coverage: EPIC takes next states from D_S, DARD from the transitions, with one action A ~ D_A shared."""
    rng = np.random.default_rng(3)
    n_s, n_a, gamma = 3, 2, 0.7
    mdp = tab.TabularMDP(rng.dirichlet(np.ones(n_s), size=(n_s, n_a)), gamma, state_dist=np.array([0.5, 0.3, 0.2]),
                         action_dist=np.array([0.8, 0.2]))
    reward = rng.normal(size=(n_s, n_a, n_s))
    tau, d_s, d_a = mdp.transitions, mdp.state_dist, mdp.action_dist
    states, actions = range(n_s), range(n_a)

    def expect_epic(x: int) -> float:  # E[R(x, A, S')], A ~ D_A, S' ~ D_S
        return sum(d_a[a] * d_s[y] * reward[x, a, y] for a in actions for y in states)

    def expect_dard(x: int) -> float:  # E[R(x, A, S')], A ~ D_A, S' ~ τ(x, A)
        return sum(d_a[a] * tau[x, a, y] * reward[x, a, y] for a in actions for y in states)

    epic_total = sum(d_s[x] * d_a[a] * d_s[y] * reward[x, a, y] for x in states for a in actions for y in states)
    epic, dard = np.zeros_like(reward), np.zeros_like(reward)
    for s, a, t in itertools.product(states, actions, states):
        epic[s, a, t] = reward[s, a, t] + gamma * expect_epic(t) - expect_epic(s) - gamma * epic_total
        offset = sum(d_a[b] * tau[s, b, x] * tau[t, b, y] * reward[x, b, y]  # E[R(S', A, S'')]
                     for b in actions for x in states for y in states)
        dard[s, a, t] = reward[s, a, t] + gamma * expect_dard(t) - expect_dard(s) - gamma * offset
    np.testing.assert_allclose(tab.epic_canonical(reward, mdp), epic, atol=1e-12)
    np.testing.assert_allclose(tab.dard_canonical(reward, mdp), dard, atol=1e-12)
    assert np.abs(epic - dard).max() > 0.1  # the two definitions differ here


def test_the_distance_norm_can_differ_from_the_normalising_norm():
    """One state, two actions, no canonicalisation: s(R1) = (3, 4)/5, s(R2) = (4, −3)/5 in L2, s1 − s2 = (−0.2, 1.4),
    so the L2 distance is ½·√2, the L1 one ½·1.6 and the L-inf one ½·1.4; an L1 normaliser divides by 7, not 5."""
    mdp = tab.TabularMDP(np.ones((1, 2, 1)), 0.5)
    r1, r2 = np.array([3.0, 4.0]).reshape(1, 2, 1), np.array([4.0, -3.0]).reshape(1, 2, 1)
    assert tab.starc_distance(r1, r2, mdp, "none", "l2") == pytest.approx(np.sqrt(2) / 2)
    assert tab.starc_distance(r1, r2, mdp, "none", "l2", distance="l1") == pytest.approx(0.8)
    assert tab.starc_distance(r1, r2, mdp, "none", "l2", distance="linf") == pytest.approx(0.7)
    assert tab.starc_distance(r1, r2, mdp, "none", "l1", distance="l2") == pytest.approx(0.5 * np.sqrt(2) * 5 / 7)
    # weights ½, ½: s = R/√12.5 in weighted L2, s1 − s2 = (−1, 7)/√12.5, weighted L1 = ½·8/√12.5
    weighted_l1 = tab.starc_distance(r1, r2, mdp, "none", "l2", weighted=True, distance="l1")
    assert weighted_l1 == pytest.approx(2 / np.sqrt(12.5))


def test_val_is_the_advantage_of_the_exact_policy_value(setup):
    rng, mdp, reward = setup
    policy = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    value = tab.policy_value(reward, mdp, policy)
    q = np.einsum("sax,sax->sa", mdp.transitions, reward + mdp.gamma * value)
    np.testing.assert_allclose((policy * q).sum(1), value, atol=1e-10)  # Bellman equation of π
    canonical = tab.val_canonical(reward, mdp, policy)
    np.testing.assert_allclose(canonical, np.broadcast_to((q - value[:, None])[..., None], reward.shape), atol=1e-10)
    np.testing.assert_allclose(tab.val_canonical(canonical, mdp, policy), canonical, atol=1e-9)  # idempotent


def test_minimal_canonicalisation_is_the_least_norm_equivalent_reward(setup):
    rng, mdp, reward = setup
    for weights in (None, tab.transition_weights(mdp)):
        minimal = tab.minimal_canonical(reward, mdp, weights)
        np.testing.assert_allclose(tab.minimal_canonical(minimal, mdp, weights), minimal, atol=1e-9)
        for _ in range(5):
            nearby = tab.shaped_reward(minimal, rng.normal(scale=0.05, size=mdp.n_states), mdp.gamma)
            nearby = tab.redistributed_reward(nearby, mdp, rng, scale=0.05)
            assert tab.reward_norm(nearby, "l2", weights) > tab.reward_norm(minimal, "l2", weights)


def test_regret_of_optimal_worst_and_equivalent_policies(setup):
    rng, mdp, reward = setup
    assert tab.normalized_regret(reward, tab.optimal_policy(reward, mdp), mdp) == pytest.approx(0, abs=1e-9)
    assert tab.normalized_regret(reward, tab.optimal_policy(-reward, mdp), mdp) == pytest.approx(1)
    equivalent = tab.redistributed_reward(tab.shaped_reward(2 * reward, rng.normal(size=12), mdp.gamma), mdp, rng)
    assert tab.normalized_regret(reward, tab.optimal_policy(equivalent, mdp), mdp) == pytest.approx(0, abs=1e-9)


def test_bad_mdps_and_names_fail_clearly(setup):
    _, mdp, reward = setup
    with pytest.raises(ValueError, match="probability distribution"):
        tab.TabularMDP(np.ones((2, 1, 2)), 0.9)
    with pytest.raises(ValueError, match="unknown canonicalisation"):
        tab.canonicalize(reward, mdp, "pearson")
    with pytest.raises(ValueError, match="unknown norm"):
        tab.reward_norm(reward, "l3")


# ------------------------------------------------------------------------------------------------- sample-based
def simulate(mdp: tab.TabularMDP, n: int, seed: int) -> dict[str, torch.Tensor]:
    """n transitions of a finite MDP with s ~ D_S, a ~ D_A (uniform), s' ~ τ(s, a), observed as one-hot vectors."""
    rng = np.random.default_rng(seed)
    s, a = rng.integers(mdp.n_states, size=n), rng.integers(mdp.n_actions, size=n)
    s_next = (rng.random((n, 1)) > mdp.transitions[s, a].cumsum(-1)).sum(-1).clip(max=mdp.n_states - 1)
    states, actions = torch.eye(mdp.n_states), torch.eye(mdp.n_actions)
    return {"obs": states[s], "action": actions[a], "next_obs": states[s_next], "terminated": torch.zeros(n)}


def table_reward(table: np.ndarray):
    """A reward source that looks up R[s, a, s'] from one-hot observations and actions."""
    values = torch.tensor(table)
    return lambda b: values[b["obs"].argmax(1), b["action"].argmax(1), b["next_obs"].argmax(1)]


@pytest.fixture
def small_mdp():
    rng = np.random.default_rng(1)
    mdp = tab.random_mdp(rng, n_states=6, n_actions=2, gamma=0.8)
    reward = tab.random_reward(rng, 6, 2)
    others = {"other": reward + tab.random_reward(rng, 6, 2),
              "redistributed": tab.redistributed_reward(reward, mdp, rng)}
    return mdp, reward, others


@pytest.mark.parametrize("norm", tab.NORMS)
def test_sampled_starc_val_converges_to_the_exact_distance(small_mdp, norm):
    """The sample norms (mean |c|, √mean c², max |c|) estimate the tabular transition-weighted norms."""
    mdp, reward, others = small_mdp
    sources = {"reward": table_reward(reward), **{k: table_reward(v) for k, v in others.items()}}
    exact = np.array([tab.starc_distance(reward, others[k], mdp, "val", norm, weighted=True) for k in others])
    assert exact[1] == pytest.approx(0, abs=1e-12)

    def error(n: int, seed: int) -> float:
        result = compare_rewards(sources, simulate(mdp, n, seed), "starc_val", mdp.gamma, device="cpu", n_features=16,
                                 norm=norm)
        return np.abs(result.distances[0, 1:] - exact).max()

    few = np.mean([error(1_000, seed) for seed in range(3)])
    assert error(100_000, seed=3) < min(few / 3, 0.01)  # the exact distances of the three norms differ by ≥ 0.02


def test_sampled_epic_converges_to_the_exact_distance(small_mdp):
    mdp, reward, others = small_mdp
    sources = {"reward": table_reward(reward), **{k: table_reward(v) for k, v in others.items()}}
    exact = np.array([tab.epic_distance(reward, others[k], mdp) for k in others])
    assert exact[1] > 0.05  # EPIC is not invariant to redistribution, and the estimate must find that too
    def error(n: int, m: int, seed: int) -> float:
        result = compare_rewards(sources, simulate(mdp, n, seed), "epic", mdp.gamma, device="cpu", seed=seed,
                                 n_mean_samples=m)
        return np.abs(result.distances[0, 1:] - exact).max()

    few = np.mean([error(100, 10, seed) for seed in range(5)])
    assert error(10_000, 300, seed=5) < min(few / 2, 0.03)


def continuous_batch(n: int = 2000, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=generator)
    action = torch.rand(n, 2, generator=generator) * 2 - 1
    next_obs = 0.9 * obs + 0.1 * action.repeat(1, 2) + 0.05 * torch.randn(n, 4, generator=generator)
    components = torch.stack([obs[:, 0] ** 2, action.pow(2).sum(1)], 1)
    return {"obs": obs, "action": action, "next_obs": next_obs, "components": components,
            "env_reward": components @ torch.tensor([-1.0, -0.1]), "terminated": torch.zeros(n)}


def test_sampled_distances_keep_the_exact_oracles():
    batch, gamma = continuous_batch(), 0.9

    def reward(b):
        return torch.sin(b["next_obs"][:, 0]) - b["action"][:, 0] * b["obs"][:, 1]

    def potential(obs):  # linear, so inside the span of STARC-VAL's features: shaping cancels exactly
        return obs @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    sources = {"reward": reward, "scaled": lambda b: 4 * reward(b), "negated": lambda b: -reward(b),
               "shaped": lambda b: reward(b) + gamma * potential(b["next_obs"]) - potential(b["obs"]),
               "other": lambda b: b["obs"][:, 2] * b["action"][:, 1]}
    for method in ("starc_val", "epic"):
        d = compare_rewards(sources, batch, method, gamma, device="cpu").distances
        np.testing.assert_allclose(d, d.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(d), 0, atol=1e-7)
        assert d[0, 1] == pytest.approx(0, abs=1e-7) and d[0, 2] == pytest.approx(1, abs=1e-7)
        assert d[0, 3] == pytest.approx(0, abs=1e-4) and d[0, 4] > 0.3


def test_sampled_rewards_equivalent_to_zero_are_half_way_from_every_reward():
    """Constant and pure-shaping rewards (float64 and float32) have canonical rewards that are 0 up to rounding: ½
    (STARC) or √½ (EPIC, ρ = 0) from any other reward and 0 from each other, whatever the norm."""
    batch, gamma = continuous_batch(), 0.9
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def shaping(b, dtype):  # a linear potential: STARC-VAL's features hold it, so it cancels to rounding
        obs, next_obs = b["obs"].to(dtype), b["next_obs"].to(dtype)
        return gamma * next_obs @ weights.to(dtype) - obs @ weights.to(dtype)

    sources = {"reward": lambda b: torch.sin(b["next_obs"][:, 0]) - b["action"][:, 0] * b["obs"][:, 1],
               "constant": lambda b: torch.full((len(b["obs"]),), 2.5, dtype=torch.float64),
               "constant32": lambda b: torch.full((len(b["obs"]),), 2.5),
               "shaping": lambda b: shaping(b, torch.float64), "shaping32": lambda b: shaping(b, torch.float32)}
    for method, norm in [("starc_val", norm) for norm in tab.NORMS] + [("epic", "l2")]:
        d = compare_rewards(sources, batch, method, gamma, device="cpu", norm=norm).distances
        np.testing.assert_allclose(d[0, 1:], 0.5 if method == "starc_val" else np.sqrt(0.5), atol=1e-6)
        np.testing.assert_allclose(d[1:, 1:], 0, atol=1e-6)
    with pytest.raises(ValueError, match="Pearson distance is an L2 one"):
        compare_rewards(sources, batch, "epic", gamma, norm="l1")


def test_basic_bootstrap_intervals_reflect_the_replicates_and_stay_in_range():
    """[2θ̂ − q95, 2θ̂ − q5] clipped to [0, 1]: replicates above a near-0 estimate (refitting bias) pull the interval
    down to 0, where percentile intervals would sit above the estimate."""
    replicates = np.stack([np.linspace(0.012, 0.034, 101), np.linspace(0.95, 0.99, 101)], 1)
    lower, upper = basic_intervals(np.array([0.012, 0.99]), replicates, confidence=0.9)
    np.testing.assert_allclose(lower, [0.0, 1.98 - 0.988])
    np.testing.assert_allclose(upper, [0.024 - 0.0131, 1.0])
    batch, gamma = continuous_batch(1000), 0.9

    def reward(b):
        return torch.sin(b["next_obs"][:, 0]) - b["action"][:, 0] * b["obs"][:, 1]

    def potential(obs):  # outside STARC-VAL's features: the estimate stays a little above the true 0
        return torch.tanh(3 * obs[:, 0] * obs[:, 1])

    sources = {"reward": reward, "shaped": lambda b: reward(b) + gamma * potential(b["next_obs"]) - potential(b["obs"]),
               "scaled": lambda b: 4 * reward(b), "negated": lambda b: -reward(b)}
    result = compare_rewards(sources, batch, "starc_val", gamma, bootstrap=30, device="cpu")
    d, lower, upper = result.distances[0], result.lower[0], result.upper[0]
    assert 0 < d[1] < 0.2 and 0 <= lower[1] <= d[1] and upper[1] > lower[1]
    np.testing.assert_allclose([lower[2], upper[2], lower[3], upper[3]], [0, 0, 1, 1], atol=1e-7)


def test_any_reward_source_with_bootstrap_intervals():
    batch = continuous_batch(1500)
    torch.manual_seed(0)
    model = RewardEnsemble((4,), 2, RewardModelConfig(hidden_sizes=[16], ensemble_size=2))
    sources = {"env": EnvReward(), "components": ComponentReward(["x2", "effort"], {"x2": -1.0, "effort": -0.1}),
               "learned": LearnedReward(model)}
    result = compare_rewards(sources, batch, "starc_val", 0.95, bootstrap=20, device="auto")
    assert result.distances[0, 1] == pytest.approx(0, abs=1e-7)  # the components reproduce the env reward
    assert np.all(result.lower <= result.upper) and np.all((0 <= result.lower) & (result.upper <= 1 + 1e-9))
    assert result.upper[0, 2] - result.lower[0, 2] > 0 and result.lower[0, 2] <= result.distances[0, 2] + 0.1
    assert result.to_dict()["names"] == ["env", "components", "learned"]
    with pytest.raises(ValueError, match="never happened.*starc_val"):
        compare_rewards(sources, batch, "epic", 0.95, device="cpu")


def test_device_choice():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
