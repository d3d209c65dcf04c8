"""STARC, EPIC and DARD reward distances: the oracles that follow from their definitions, exactly on finite MDPs and
approximately from samples (converging to the exact value as samples grow)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from reward_learning import ComponentReward, EnvReward
from reward_learning import comparison as tab
from reward_learning.comparison_sampled import compare_rewards, pick_device
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
            assert d[0, 2] <= d[0, 1] + d[1, 2] + 1e-12


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


def test_sampled_starc_val_converges_to_the_exact_distance(small_mdp):
    mdp, reward, others = small_mdp
    sources = {"reward": table_reward(reward), **{k: table_reward(v) for k, v in others.items()}}
    exact = np.array([tab.starc_distance(reward, others[k], mdp, "val", "l2", weighted=True) for k in others])
    assert exact[1] == pytest.approx(0, abs=1e-12)
    def error(n: int, seed: int) -> float:
        result = compare_rewards(sources, simulate(mdp, n, seed), "starc_val", mdp.gamma, device="cpu", n_features=16)
        return np.abs(result.distances[0, 1:] - exact).max()

    few = np.mean([error(1_000, seed) for seed in range(3)])
    assert error(100_000, seed=3) < min(few / 3, 0.02)


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
