"""QR-DQN and IQN: tau embedding, learned quantiles on a one-step MDP, risk-sensitive acting, epsilon schedule,
target updates, the n-step discount in the loss, the critic reset of preference runs, checkpoints through the
trainer, and valid warm-up actions on discrete spaces."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from envs.components import RewardComponent
from robotrl.agents import IQN, QRDQN, EnsembleIQN, EnsembleIQNConfig, IQNConfig, PrIQN, PrIQNConfig, QRDQNConfig
from robotrl.agents.iqn import TauEmbedding
from robotrl.core.buffers import ReplayBatch
from robotrl.core.quantile import midpoint_taus
from robotrl.spaces import ActionAdapter
from robotrl.trainer import Trainer

CPU = torch.device("cpu")


def make_agent(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if name == "iqn":
        return IQN(3, 2, IQNConfig(hidden_sizes=[32, 32], **overrides), CPU)
    return QRDQN(3, 2, QRDQNConfig(hidden_sizes=[32, 32], num_quantiles=20, **overrides), CPU)


def test_tau_embedding_shape_and_cosine_features():
    embedding = TauEmbedding(64, 16)
    taus = torch.rand(5, 7)
    assert embedding(taus).shape == (5, 7, 16)
    assert (embedding(taus) >= 0).all()  # ReLU
    features = embedding.features(taus)
    assert features.shape == (5, 7, 64)
    torch.testing.assert_close(features[..., 0], torch.ones(5, 7))
    torch.testing.assert_close(features[2, 3, 9], torch.cos(math.pi * 9 * taus[2, 3]))


def bandit_batch(gen: torch.Generator, size: int = 128) -> ReplayBatch:
    """One-step MDP: action 0 pays U(0, 1) (mean 0.5, CVaR_0.25 = 0.125), action 1 pays 0.4 always.

    Every transition terminates, so the target is the reward alone (as with gamma = 0)."""
    action = torch.randint(0, 2, (size, 1), generator=gen).float()
    reward = torch.where(action[:, 0] == 0, torch.rand(size, generator=gen), torch.full((size,), 0.4))
    obs = torch.zeros(size, 3)
    return ReplayBatch(obs, action, reward, obs, torch.ones(size))


@pytest.fixture(autouse=True)
def one_thread():
    """Small matmuls: a second intra-op thread only spins, and on a loaded machine it makes updates ~25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bandit_agents() -> dict:
    """QR-DQN and IQN trained on the one-step MDP (shared by the tests below).

    kappa is small because the quantile Huber loss is quadratic for |errors| < kappa: with kappa = 1 and rewards in
    [0, 1] it would learn expectiles, which lie between the mean and the quantiles."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    agents = {}
    for name in ("qrdqn", "iqn"):
        agent = make_agent(name, lr=3e-3, target_update_interval=1, tau=0.05, kappa=0.01)
        gen = torch.Generator().manual_seed(0)
        for _ in range(1000):
            agent.update(bandit_batch(gen))
        agents[name] = agent
    torch.set_num_threads(threads)
    return agents


def test_iqn_in_eval_mode_acts_deterministically_without_touching_the_global_rng():
    agent = make_agent("iqn")
    obs = torch.randn(64, 3)
    agent.eval()
    before = torch.get_rng_state()
    first = agent.act(obs, deterministic=True)
    assert torch.equal(torch.get_rng_state(), before)  # evaluations do not shift training's random stream
    assert torch.equal(agent.act(obs, deterministic=True), first)
    agent.train()
    agent.act(obs, deterministic=True)  # training mode samples its fractions
    assert not torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["qrdqn", "iqn"])
def test_learned_quantiles_match_the_true_return_distribution(name, bandit_agents):
    agent = bandit_agents[name]
    obs = torch.zeros(1, 3)
    fractions = agent.taus if name == "qrdqn" else torch.linspace(0.05, 0.95, 19)
    z = agent.quantiles(agent.net, obs, fractions)[0].detach()
    assert (z[1:, 0] - z[:-1, 0] > -0.02).all(), "quantiles of action 0 are not ordered"
    assert (z[:, 0] - fractions).abs().max() < 0.08, z[:, 0]  # U(0, 1)'s quantile function is the identity
    assert (z[:, 1] - 0.4).abs().max() < 0.05, z[:, 1]
    assert agent.act(obs, deterministic=True).item() == 0  # mean 0.5 beats 0.4


def test_iqn_cvar_prefers_the_safe_action(bandit_agents):
    agent = bandit_agents["iqn"]
    obs = torch.zeros(1, 3)
    assert agent.act(obs, deterministic=True).item() == 0
    agent.config.cvar_alpha = 0.25  # CVaR_0.25: 0.125 for action 0 against 0.4 for action 1
    try:
        assert agent.act(obs, deterministic=True).item() == 1
    finally:
        agent.config.cvar_alpha = 1.0


def test_epsilon_falls_linearly_then_stays():
    agent = make_agent("qrdqn", epsilon_start=1.0, epsilon_end=0.1, exploration_steps=100)
    assert agent.epsilon == 1.0
    agent.act(torch.zeros(50, 3))  # 50 env steps in one vector step
    assert agent.epsilon == pytest.approx(0.55)
    agent.act(torch.zeros(1, 3), deterministic=True)  # evaluation does not advance the schedule
    assert agent.epsilon == pytest.approx(0.55)
    agent.act(torch.zeros(80, 3))
    assert agent.epsilon == pytest.approx(0.1)


def test_epsilon_one_acts_uniformly_and_zero_greedily():
    agent = make_agent("qrdqn", epsilon_start=1.0, epsilon_end=1.0)
    actions = agent.act(torch.zeros(4000, 3))
    assert actions.shape == (4000, 1)
    assert abs(actions.mean().item() - 0.5) < 0.05
    agent.config.epsilon_start = agent.config.epsilon_end = 0.0
    greedy = agent.act(torch.zeros(1, 3), deterministic=True)
    assert torch.equal(agent.act(torch.zeros(100, 3)), greedy.expand(100, 1))


@pytest.mark.parametrize("name", ["qrdqn", "iqn"])
def test_hard_target_update_every_c_steps(name):
    agent = make_agent(name, target_update_interval=3)
    gen = torch.Generator().manual_seed(0)
    initial = [p.clone() for p in agent.target_net.parameters()]
    for step in range(1, 7):
        agent.update(bandit_batch(gen, 16))
        same_as_online = all(torch.equal(t, p) for t, p in zip(agent.target_net.parameters(),
                                                                agent.net.parameters(), strict=True))
        unchanged = all(torch.equal(t, p) for t, p in zip(agent.target_net.parameters(), initial, strict=True))
        assert same_as_online == (step % 3 == 0)
        assert unchanged == (step < 3)


def test_polyak_target_update_moves_part_way():
    agent = make_agent("iqn", target_update_interval=1, tau=0.25)
    before = [p.clone() for p in agent.target_net.parameters()]
    agent.update(bandit_batch(torch.Generator().manual_seed(0), 16))
    for old, target, online in zip(before, agent.target_net.parameters(), agent.net.parameters(), strict=True):
        torch.testing.assert_close(target, 0.75 * old + 0.25 * online)


def test_random_warm_up_actions_are_valid_indices():
    adapter = ActionAdapter.from_space(gym.spaces.Discrete(3))
    actions = adapter.random(np.random.default_rng(0), 300)
    assert actions.shape == (300, 1)
    assert set(np.unique(actions)) == {0.0, 1.0, 2.0}


@pytest.mark.parametrize("name", ["qrdqn", "iqn"])
def test_trainer_checkpoint_round_trip_on_cartpole(name, tiny_config, tmp_path):
    config = tiny_config(name, env_id="CartPole-v1", train={"total_steps": 300, "checkpoint_every": 300},
                         algo={"hidden_sizes": [16, 16], "exploration_steps": 100})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    warm_up = trainer.buffer.storage["action"][: config.algo.learning_starts]
    assert set(warm_up.unique().tolist()) == {0.0, 1.0}  # valid indices in the stored format, not [-1, 1] vectors
    agent = trainer.agent
    assert agent.num_updates > 0 and agent.acted_steps == 300 - config.algo.learning_starts

    resumed = Trainer.resume(tmp_path / "run", progress=False)
    fresh = resumed.agent
    assert fresh.num_updates == agent.num_updates and fresh.acted_steps == agent.acted_steps
    assert fresh.epsilon == agent.epsilon
    obs = torch.randn(8, 4)
    torch.manual_seed(0)
    expected = agent.action_values(agent.net, obs)
    torch.manual_seed(0)
    torch.testing.assert_close(fresh.action_values(fresh.net, obs), expected, rtol=0, atol=0)
    for a, b in zip(agent.target_net.parameters(), fresh.target_net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.buffer is not None and len(resumed.buffer) == 300


def test_dqn_agents_refuse_continuous_actions(tiny_config, tmp_path):
    config = tiny_config("iqn")  # Pendulum-v1: a Box
    with pytest.raises(ValueError, match="iqn needs discrete actions but Pendulum-v1 has continuous actions; use algo"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)


class ConstantQuantiles(nn.Module):
    """Every quantile of action a in state s = obs[:, 0] is table[s, a]: QR-DQN's flat head of `num_quantiles`
    outputs per action when called without fractions, IQN's [batch, T, A] at any fractions."""

    def __init__(self, table: torch.Tensor, num_quantiles: int) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.num_quantiles = num_quantiles

    def forward(self, obs: torch.Tensor, taus: torch.Tensor | None = None) -> torch.Tensor:
        values = self.table[obs[:, 0].long()].unsqueeze(1)  # [batch, 1, A]
        if taus is None:
            return values.expand(-1, self.num_quantiles, -1).flatten(1)
        return values.expand(-1, taus.shape[-1], -1)


@pytest.mark.parametrize("name", ["qrdqn", "iqn"])
def test_loss_bootstraps_with_the_batch_discount_not_gamma(name):
    """n-step batches carry gamma^m per transition; the target is r + discount * Z_target(s', a*)."""
    if name == "qrdqn":  # its 4 fractions are the midpoints 1/8, 3/8, 5/8, 7/8
        agent = QRDQN(3, 2, QRDQNConfig(hidden_sizes=[8, 8], gamma=0.9, num_quantiles=4), CPU)
    else:  # the same 4 fractions instead of sampled ones, so the loss can be worked out by hand
        agent = IQN(3, 2, IQNConfig(hidden_sizes=[8, 8, 8], gamma=0.9, num_tau_samples=4), CPU)
        agent.train_taus = lambda size: midpoint_taus(4).expand(size, -1)
    # state 0: Z(s, a=0) = 1 at every fraction; next state 1: action 0 is best with Z(s', 0) = 2
    table = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    agent.net, agent.target_net = ConstantQuantiles(table, 4), ConstantQuantiles(table, 4)
    batch = ReplayBatch(obs=torch.zeros(2, 3), action=torch.zeros(2, 1), reward=torch.tensor([0.5, 1.0]),
                        next_obs=torch.ones(2, 3), terminated=torch.zeros(2), discount=torch.tensor([0.5, 0.25]))
    # targets 0.5 + 0.5 * 2 and 1.0 + 0.25 * 2, both 1.5: every error is +0.5 (Huber 0.125), weighted by tau as the
    # prediction is below the target; summed over the 4 fractions (their sum is 2): 0.25 for each transition
    assert agent.loss(batch).item() == pytest.approx(0.25)
    # a one-step batch (no discount) uses gamma = 0.9: targets 2.3 and 2.8, errors 1.3 and 1.8, Huber 0.8 and 1.3
    batch.discount = None
    assert agent.loss(batch).item() == pytest.approx(2.0 * (0.8 + 1.3) / 2)


def make_any_dqn(name: str) -> IQN | QRDQN:
    """A small agent of every distributional DQN (3 observations, 2 actions; Pr-IQN with 2 reward components)."""
    torch.manual_seed(0)
    small = {"hidden_sizes": [16, 16], "num_tau_samples": 8, "num_target_samples": 8, "num_policy_samples": 8}
    if name == "qrdqn":
        return QRDQN(3, 2, QRDQNConfig(hidden_sizes=[16, 16], num_quantiles=8), CPU)
    if name == "iqn":
        return IQN(3, 2, IQNConfig(**small), CPU)
    if name == "ensemble_iqn":
        return EnsembleIQN(3, 2, EnsembleIQNConfig(**small, ensemble_size=2), CPU)
    spec = (RewardComponent("crash", 1.0, "minimize", ""), RewardComponent("progress", 1.0, "maximize", ""))
    return PrIQN(3, 2, PrIQNConfig(**small, preorder=[["crash"], ["progress"]]), CPU, reward_spec=spec)


@pytest.mark.parametrize("name", ["qrdqn", "iqn", "ensemble_iqn", "pr_iqn"])
def test_reset_critic_reinitialises_the_net_copies_the_target_and_restarts_the_optimiser(name):
    """PEBBLE's reset after the first feedback round: every distributional DQN supports it."""
    agent = make_any_dqn(name)
    gen = torch.Generator().manual_seed(0)

    def batch() -> ReplayBatch:
        obs = torch.randn(16, 3, generator=gen)
        return ReplayBatch(obs, torch.randint(0, 2, (16, 1), generator=gen).float(), torch.randn(16, generator=gen),
                           obs + 0.1, torch.zeros(16), components=torch.randn(16, 2, generator=gen))

    for _ in range(3):
        agent.update(batch())
    trained = {k: p.detach().clone() for k, p in agent.net.named_parameters()}
    old_optimizer, modules = agent.optimizer, list(agent.net.modules())
    assert old_optimizer.state

    torch.manual_seed(1)
    expected = agent.make_net().state_dict()  # what a fresh network draws from this seed
    torch.manual_seed(1)
    agent.reset_critic()

    assert list(agent.net.modules()) == modules  # same architecture, re-initialised in place
    for key, param in agent.net.named_parameters():
        assert not torch.equal(param, trained[key]), key
        assert torch.equal(param, expected[key]), key
    for online, target in zip(agent.net.state_dict().values(), agent.target_net.state_dict().values(), strict=True):
        assert torch.equal(online, target)
    assert agent.optimizer is not old_optimizer and not agent.optimizer.state
    assert agent.optimizers() == {"net": agent.optimizer}
    assert {id(p) for p in agent.optimizer.param_groups[0]["params"]} == {id(p) for p in agent.net.parameters()}

    loss = agent.update(batch())["quantile_loss"]
    assert torch.isfinite(loss) and agent.optimizer.state
    assert any(not torch.equal(p, expected[k]) for k, p in agent.net.named_parameters())


def test_qrdqn_preference_run_resets_the_net_at_the_first_feedback_round(tiny_config, tmp_path, monkeypatch):
    preference = {"query_every": 200, "unsup_steps": 0, "budget": 20, "queries_per_round": 10, "segment_length": 10,
                  "diagnostic_pairs": 0, "starc_samples": 0, "reset_updates": 5,
                  "model": {"hidden_sizes": [16, 16], "max_epochs": 3}}
    config = tiny_config("qrdqn", env_id="CartPole-v1", algo={"hidden_sizes": [16, 16], "num_quantiles": 8},
                         train={"total_steps": 400}, reward={"source": "preference", "preference": preference})
    assert config.reward.preference.reset_critic
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    resets = []
    reset = trainer.agent.reset_critic
    monkeypatch.setattr(trainer.agent, "reset_critic", lambda: (resets.append(trainer.step), reset())[1])
    trainer.train()
    assert len(resets) == 1  # once, at the first feedback round
    assert trainer.preference.budget.spent == 20 and trainer.step == 400
    stored = {k: v[: len(trainer.buffer)] for k, v in trainer.buffer.storage.items()}
    assert not torch.allclose(stored["reward"], stored["env_reward"])  # relabelled with the learned reward
