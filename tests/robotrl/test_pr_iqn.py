"""Pr-IQN and its baselines: quantile dominance, preorder-optimal subsets, targets that follow the subset, preorder
validation, learning the preorder's choice on a bandit, the trainer path (eval component metrics, checkpoints), and
the ensemble IQN."""

from __future__ import annotations

import pytest
import torch
from test_dqn_family import one_thread  # noqa: F401  (autouse: one torch thread for these small matmuls)
from torch import nn

from envs.components import RewardComponent
from robotrl.agents import EnsembleIQN, EnsembleIQNConfig, PrIQN, PrIQNConfig
from robotrl.config import ConfigError
from robotrl.core.buffers import ReplayBatch
from robotrl.core.preorder import dominance_matrix, dominates, optimal_subset, quantile_dominance
from robotrl.logger import read_metrics
from robotrl.trainer import Trainer

CPU = torch.device("cpu")
# a bandit's components: crashing is worth little in the env reward (weight 0.1) next to progress (weight 1)
SPEC = (RewardComponent("crash", 0.1, "minimize", "1.0 when the action crashes"),
        RewardComponent("progress", 1.0, "maximize", "distance made"))


def grid_z(*per_objective: list[list[float]], taus: int = 20) -> torch.Tensor:
    """[1, T, C, A] quantiles from per objective, per action (lo, hi): each action's quantiles rise linearly."""
    steps = torch.linspace(0.0, 1.0, taus)
    z = [[lo + (hi - lo) * steps for lo, hi in actions] for actions in per_objective]
    return torch.stack([torch.stack(actions, -1) for actions in z], 1).unsqueeze(0)


def make_pr_iqn(preorder: list[list[str]], spec=SPEC, seed: int = 0, **overrides) -> PrIQN:
    torch.manual_seed(seed)
    config = PrIQNConfig(hidden_sizes=[32, 32], preorder=preorder, **overrides)
    return PrIQN(3, 3, config, CPU, reward_spec=spec)


# ------------------------------------------------------------------------------------------------ quantile dominance
@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_quantile_dominance_is_antisymmetric_and_irreflexive(margin):
    gen = torch.Generator().manual_seed(0)
    za = torch.randn(4000, 16, generator=gen).sort(-1).values
    # half the partners are small perturbations (often dominated either way), half unrelated distributions
    zb = torch.cat([za[:2000] + 0.3 * torch.randn(2000, 1, generator=gen) + 0.05 * torch.randn(2000, 16, generator=gen),
                    torch.randn(2000, 16, generator=gen).sort(-1).values])
    for epsilon in (0.0, 0.1, 0.3, 0.49):
        ab, ba = dominates(za, zb, epsilon, margin), dominates(zb, za, epsilon, margin)
        assert not (ab & ba).any()
        assert ab.sum() > 100 and ba.sum() > 100  # the property is not vacuous
        assert not dominates(za, za, epsilon, margin).any()
    assert (quantile_dominance(za, zb, margin) + quantile_dominance(zb, za, margin) <= 1.0).all()


def test_dominance_matrix_orients_pairs_and_has_an_empty_diagonal():
    z = grid_z([(0.0, 1.0), (2.0, 3.0), (-1.0, 2.0)])  # one objective: action 1 above both others
    dominance = dominance_matrix(z, epsilon=0.1)[0, 0]
    assert dominance[1, 0] and dominance[1, 2] and not dominance[0, 1]
    assert not dominance.diagonal().any()
    assert not dominance[0, 2] and not dominance[2, 0]  # they cross: each is better on half of the grid


# ------------------------------------------------------------------------------------------------- optimal subsets
def test_a_higher_priority_objective_that_separates_actions_is_never_overridden():
    # objective 0: action 0 is safe (0) and action 1 unsafe (-1); objective 1: action 1 is far ahead
    z = grid_z([(0.0, 0.0), (-1.0, -1.0)], [(0.0, 1.0), (10.0, 11.0)])
    assert optimal_subset(z, [[0], [1]], 0.1).tolist() == [[True, False]]
    assert optimal_subset(z, [[1], [0]], 0.1).tolist() == [[False, True]]


def test_near_ties_within_epsilon_fall_through_to_the_next_group():
    # objective 0: action 0 beats action 1 on 17 of 20 quantiles (85 %), then falls behind; objective 1 prefers 1
    steps = torch.linspace(0.0, 1.0, 20)
    first = torch.stack([steps + 0.1 * (steps < 0.85) - 0.5 * (steps >= 0.85), steps], -1)
    z = torch.stack([first, grid_z([(0.0, 1.0), (5.0, 6.0)])[0, :, 0]], 1).unsqueeze(0)
    assert quantile_dominance(z[0, :, 0, 0], z[0, :, 0, 1]).item() == pytest.approx(0.85)
    assert optimal_subset(z, [[0], [1]], epsilon=0.1).tolist() == [[False, True]]  # 85 % < 90 %: tie, objective 1
    assert optimal_subset(z, [[0], [1]], epsilon=0.2).tolist() == [[True, False]]  # 85 % >= 80 %: objective 0


def test_margin_makes_close_quantiles_ties():
    z = grid_z([(0.0, 1.0), (0.02, 1.02)], [(1.0, 2.0), (0.0, 1.0)])
    assert optimal_subset(z, [[0], [1]], 0.1, margin=0.0).tolist() == [[False, True]]
    assert optimal_subset(z, [[0], [1]], 0.1, margin=0.05).tolist() == [[True, False]]


def test_group_rule_is_pareto_dominance_over_the_group():
    # group {0, 1}: action 0 wins on objective 0, action 1 on objective 1 (incomparable, both kept);
    # action 2 is dominated by action 0 on objective 0 and dominates no one (removed)
    z = grid_z([(5.0, 6.0), (0.0, 1.0), (2.0, 3.0)], [(0.0, 1.0), (5.0, 6.0), (0.0, 1.0)])
    assert optimal_subset(z, [[0, 1]], 0.1).tolist() == [[True, True, False]]
    # objective 2 ranks below the group and decides between the survivors
    z = torch.cat([z, grid_z([(0.0, 1.0), (3.0, 4.0), (9.0, 9.0)])], 2)
    assert optimal_subset(z, [[0, 1], [2]], 0.1).tolist() == [[False, True, False]]


def test_a_dominance_cycle_leaves_the_subset_unchanged_rather_than_empty():
    # inside one group: 0 beats 1 on objective 0, 1 beats 2 on objective 1, 2 beats 0 on objective 2
    z = grid_z([(1.0, 1.0), (0.0, 0.0), (0.5, 0.5)], [(0.5, 0.5), (1.0, 1.0), (0.0, 0.0)],
               [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
    assert optimal_subset(z, [[0, 1, 2]], 0.1).tolist() == [[True, True, True]]


def test_optimal_subsets_are_computed_per_state_and_never_empty():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(256, 16, 4, 6, generator=gen).sort(1).values + 2.0 * torch.randn(256, 1, 4, 6, generator=gen)
    subset = optimal_subset(z, [[0], [1, 2], [3]], 0.2)
    assert subset.shape == (256, 6) and subset.any(-1).all()
    one_by_one = torch.cat([optimal_subset(z[i:i + 1], [[0], [1, 2], [3]], 0.2) for i in range(256)])
    assert torch.equal(subset, one_by_one)
    # the first group alone: removed actions are dominated on objective 0 by a kept one, kept ones by none
    first, dominance = optimal_subset(z, [[0]], 0.2), dominance_matrix(z, 0.2)[:, 0]
    beaten = (dominance & first.unsqueeze(2)).any(1)
    assert torch.equal(beaten, ~first)
    # lower groups only narrow the first group's subset: they never bring back an action it removed
    assert not (subset & ~first).any() and (subset.sum(-1) < first.sum(-1)).any()


# ----------------------------------------------------------------------------------------------------- preorders
def test_unknown_and_unranked_components_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown reward component\(s\) \['progres'\] \(did you mean 'progres' -> "
                       r"'progress'\?\); the env declares \['crash', 'progress'\]"):
        make_pr_iqn([["crash"], ["progres"]])
    with pytest.raises(ValueError, match=r"must rank every reward component of the env; missing \['progress'\]"):
        make_pr_iqn([["crash"]])
    with pytest.raises(ValueError, match="ranked more than once"):
        PrIQNConfig(preorder=[["crash"], ["crash", "progress"]])
    with pytest.raises(ValueError, match="declares none"):
        make_pr_iqn([["crash"]], spec=())


def test_bad_preorder_through_the_trainer_names_the_env_components(tiny_config, tmp_path):
    config = tiny_config("pr_iqn", env_id="CartPole-v1", algo={"preorder": [["upright"], ["falen"]]})
    with pytest.raises(ValueError, match=r"\['falen'\].*'falen' -> 'fallen'.*\['upright', 'fallen'\]"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="dominance_epsilon"):
        tiny_config("pr_iqn", env_id="CartPole-v1", algo={"dominance_epsilon": 0.5, "preorder": [["upright"]]})


# ---------------------------------------------------------------------------------------------- targets follow it
class TableNet(nn.Module):
    """A stand-in quantile network: state index obs[:, 0] -> fixed per-objective values [C, A], the same at every
    tau (degenerate return distributions)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        return self.table[obs[:, 0].long()].unsqueeze(1).expand(-1, taus.shape[-1], -1, -1)


@pytest.mark.parametrize("double_q", [False, True])
def test_every_objective_bootstraps_from_the_subset_action_at_the_next_state(double_q):
    agent = make_pr_iqn([["crash"], ["progress"]], gamma=0.5, double_q=double_q, kappa=0.01)
    # next state (index 1): action 0 crashes (-1) with the most progress (4: scalarised best, 4 - 0.1 = 3.9),
    # actions 1 and 2 are safe; action 1 makes more progress (2) than action 2 (1) -> a* = 1
    next_values = torch.tensor([[-1.0, 0.0, 0.0], [4.0, 2.0, 1.0]])
    reward = torch.tensor([0.0, 0.5])  # signed objective rewards of the stored transition (crash 0, progress 0.5)
    # state 0, action 0 predicts exactly r + gamma * Z(s', a*) on both objectives
    current = torch.zeros(2, 3)
    current[:, 0] = reward + 0.5 * next_values[:, 1]
    table = torch.stack([current, next_values])
    agent.net, agent.target_net = TableNet(table), TableNet(table)
    batch = ReplayBatch(obs=torch.zeros(4, 3), action=torch.zeros(4, 1), reward=torch.full((4,), -99.0),
                        next_obs=torch.ones(4, 3), terminated=torch.zeros(4),
                        components=torch.tensor([[0.0, 0.5]]).expand(4, 2))
    scalarised = (next_values * agent.weights[:, None]).sum(0).argmax().item()
    assert scalarised == 0 and agent.greedy_action(agent.target_net, batch.next_obs).tolist() == [1] * 4
    assert agent.loss(batch).item() == pytest.approx(0.0, abs=1e-6)
    agent.greedy_action = lambda net, obs: torch.full((obs.shape[0],), scalarised)  # what a scalarised agent does
    assert agent.loss(batch).item() > 0.1


def test_tie_breaks_pick_inside_the_subset():
    # action 0 crashes; actions 1 and 2 are equally safe and make equal progress: the subset is {1, 2}
    agent = make_pr_iqn([["crash"], ["progress"]], tie_break="random")
    agent.net = TableNet(torch.tensor([[[-1.0, 0.0, 0.0], [5.0, 1.0, 1.0]]]))
    obs = torch.zeros(400, 3)
    assert agent.optimal_actions(agent.net, obs)[0][0].tolist() == [False, True, True]
    assert set(agent.greedy_action(agent.net, obs).tolist()) == {1, 2}
    agent.config.tie_break = "scalarised"  # the env reward would take action 0 (5 - 0.1); inside the subset: a tie
    assert set(agent.greedy_action(agent.net, obs).tolist()) <= {1, 2}


# ------------------------------------------------------------------------------------------------------ learning
def bandit_batch(gen: torch.Generator, size: int = 64) -> ReplayBatch:
    """One-step MDP with 3 actions and components (crash, progress): action 0 crashes but makes the most progress,
    U(0.8, 1); action 1 is safe with U(0.4, 0.6); action 2 is safe with U(0.1, 0.3). The env reward
    (-0.1 crash + progress) prefers action 0; the preorder crash > progress demands action 1."""
    action = torch.randint(0, 3, (size,), generator=gen)
    low = torch.tensor([0.8, 0.4, 0.1])[action]
    components = torch.stack([(action == 0).float(), low + 0.2 * torch.rand(size, generator=gen)], -1)
    reward = components @ torch.tensor([-0.1, 1.0])
    obs = torch.zeros(size, 3)
    return ReplayBatch(obs, action[:, None].float(), reward, obs, torch.ones(size), components)


def test_pr_iqn_learns_the_preorders_choice_where_the_env_reward_disagrees():
    agent = make_pr_iqn([["crash"], ["progress"]], lr=3e-3, target_update_interval=1, tau=0.05, kappa=0.01,
                        quantile_margin=0.05, num_tau_samples=16, num_target_samples=16)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        agent.update(bandit_batch(gen))
    obs = torch.zeros(1, 3)
    z = agent.quantiles(agent.net, obs, agent.grid)[0].detach()  # [K, C, A]
    torch.testing.assert_close(z[:, 0].mean(0), torch.tensor([-1.0, 0.0, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(z[:, 1].mean(0), torch.tensor([0.9, 0.5, 0.2]), atol=0.05, rtol=0)
    assert agent.optimal_actions(agent.net, obs)[0].tolist() == [[False, True, False]]
    assert agent.act(obs, deterministic=True).item() == 1
    assert (z.mean(0) * agent.weights[:, None]).sum(0).argmax().item() == 0  # the scalarised choice differs
    agent.groups = [[1], [0]]  # progress first: the crashing action wins
    assert agent.act(obs, deterministic=True).item() == 0


def test_ensemble_iqn_members_differ_and_learn_the_mean():
    torch.manual_seed(0)
    config = EnsembleIQNConfig(hidden_sizes=[32, 32], ensemble_size=3, lr=3e-3, tau=0.05, target_update_interval=1,
                               kappa=0.01, num_tau_samples=16, num_target_samples=16)
    agent = EnsembleIQN(3, 3, config, CPU)
    obs = torch.zeros(1, 3)
    first, second = agent.net.members[0], agent.net.members[1]
    assert not torch.equal(first.head[-1].weight, second.head[-1].weight)  # independently initialised
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        agent.update(bandit_batch(gen))
    z = agent.quantiles(agent.net, obs, torch.linspace(0.05, 0.95, 19))[0].detach()  # [T, E, A]
    torch.testing.assert_close(z.mean(0), torch.tensor([0.8, 0.5, 0.2]).expand(3, 3), atol=0.06, rtol=0)
    assert agent.action_values(agent.net, obs).shape == (1, 3)
    assert agent.act(obs, deterministic=True).item() == 0  # the env reward's best action


# ------------------------------------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("name", ["pr_iqn", "ensemble_iqn"])
def test_trainer_logs_component_metrics_and_checkpoints_round_trip(name, tiny_config, tmp_path):
    algo = {"hidden_sizes": [16, 16], "exploration_steps": 100, "num_tau_samples": 8, "num_target_samples": 8,
            "num_policy_samples": 8}
    algo.update({"preorder": [["fallen"], ["upright"]], "n_step": 3} if name == "pr_iqn" else {"ensemble_size": 2})
    config = tiny_config(name, env_id="CartPole-v1", algo=algo,
                         train={"total_steps": 300, "checkpoint_every": 300, "eval_every": 300, "eval_episodes": 2})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    agent = trainer.agent
    assert agent.num_updates > 0
    final = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/return" in r][-1]
    # CartPole: upright is 1 on every step, so its episode total is the episode length (and the return)
    assert final["eval/components/upright"] == pytest.approx(final["eval/length"])
    assert final["eval/components_per_step/upright"] == pytest.approx(1.0)
    assert 0.0 <= final["eval/components/fallen"] <= 1.0

    fresh = Trainer.resume(tmp_path / "run", progress=False).agent
    assert fresh.num_updates == agent.num_updates and fresh.acted_steps == agent.acted_steps
    obs = torch.randn(16, 4)
    torch.manual_seed(0)
    expected = agent.greedy_action(agent.net, obs)
    torch.manual_seed(0)
    assert torch.equal(fresh.greedy_action(fresh.net, obs), expected)
    for a, b in zip(agent.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
