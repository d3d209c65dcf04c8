"""Agents: checkpoint round trips, critic targets (termination vs truncation), SAC temperature tuning, TD3 target
smoothing, PPO's minibatch loss and KL early stop by hand, fused ensembles."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from robotrl.agents import PPO, SAC, TD3, TQC, PPOConfig, SACConfig, TD3Config, TQCConfig
from robotrl.agents import sac as sac_module
from robotrl.agents.ppo import STAT_NAMES
from robotrl.core import checkpoint as ckpt
from robotrl.core.buffers import ReplayBatch, RolloutBuffer
from robotrl.core.networks import EnsembleMLP

CPU = torch.device("cpu")
OBS, ACT = 5, 2


def random_batch(seed: int, size: int = 16, terminated: float | None = None) -> ReplayBatch:
    gen = torch.Generator().manual_seed(seed)
    term = torch.full((size,), terminated) if terminated is not None else (torch.rand(size, generator=gen) < 0.3)
    return ReplayBatch(
        obs=torch.randn(size, OBS, generator=gen),
        action=torch.rand(size, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(size, generator=gen),
        next_obs=torch.randn(size, OBS, generator=gen),
        terminated=term.float(),
    )


def random_rollout(seed: int, agent: PPO, num_steps: int = 8, num_envs: int = 2) -> RolloutBuffer:
    gen = torch.Generator().manual_seed(seed)
    rollout = RolloutBuffer(num_steps, num_envs, (OBS,), ACT, CPU)
    for _ in range(num_steps):
        obs = agent.normalize_obs(torch.randn(num_envs, OBS, generator=gen), update=True)
        action, log_prob = agent.sample(obs)
        rollout.add(obs, action, log_prob, agent.value(obs), torch.randn(num_envs, generator=gen),
                    (torch.rand(num_envs, generator=gen) < 0.2).float())
    rollout.compute_gae(torch.zeros(num_envs), 0.99, 0.95)
    return rollout


def deterministic_sample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAC's sampler without randomness: a = tanh(mean), log pi = -log_std summed (so the entropy is log_std summed)."""
    return torch.tanh(mean), -log_std.sum(-1)


def make_agent(name: str, seed: int):
    torch.manual_seed(seed)
    if name == "sac":
        return SAC(OBS, ACT, SACConfig(hidden_sizes=[16, 16], batch_size=16), CPU)
    if name == "td3":
        return TD3(OBS, ACT, TD3Config(hidden_sizes=[16, 16], batch_size=16), CPU)
    if name == "tqc":
        return TQC(OBS, ACT, TQCConfig(hidden_sizes=[16, 16], batch_size=16, num_critics=3, num_quantiles=5), CPU)
    return PPO(OBS, ACT, PPOConfig(hidden_sizes=[16], minibatch_size=8, epochs=2, normalize_obs=True,
                                   normalize_reward=True), CPU, num_envs=2)


def do_update(agent, name: str, seed: int):
    torch.manual_seed(seed)
    if name == "ppo":
        return agent.update(random_rollout(seed, agent))
    return agent.update(random_batch(seed))


def params(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


@pytest.mark.parametrize("name", ["sac", "td3", "ppo", "tqc"])
def test_full_state_round_trip_gives_identical_actions_and_updates(name, tmp_path):
    agent = make_agent(name, seed=0)
    for i in range(3):  # non-trivial optimiser moments, counters and normaliser stats
        do_update(agent, name, seed=100 + i)
    ckpt.atomic_save(agent.full_state(), tmp_path / "agent.pt")

    fresh = make_agent(name, seed=1)  # different initial weights
    obs = torch.randn(6, OBS)
    assert not torch.equal(fresh.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    fresh.load_full_state(ckpt.load(tmp_path / "agent.pt"))
    assert fresh.num_updates == agent.num_updates > 0

    torch.testing.assert_close(fresh.act(obs, deterministic=True), agent.act(obs, deterministic=True), rtol=0, atol=0)
    torch.manual_seed(7)
    sampled = agent.act(obs, deterministic=False)
    torch.manual_seed(7)
    torch.testing.assert_close(fresh.act(obs, deterministic=False), sampled, rtol=0, atol=0)

    metrics_a = do_update(agent, name, seed=200)
    metrics_b = do_update(fresh, name, seed=200)
    for key in metrics_a:
        torch.testing.assert_close(metrics_b[key], metrics_a[key], rtol=0, atol=0, msg=key)
    after_a, after_b = params(agent), params(fresh)
    assert after_a.keys() == after_b.keys()
    for key in after_a:
        torch.testing.assert_close(after_b[key], after_a[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", ["sac", "td3", "tqc"])
def test_checkpoint_loads_whatever_the_compile_flag(name):
    """`algo.compile` only changes speed, so a checkpoint must load with it on or off (e.g. eval without a compiler)."""
    cls, cfg = {"sac": (SAC, SACConfig), "td3": (TD3, TD3Config), "tqc": (TQC, TQCConfig)}[name]
    compiled = cls(OBS, ACT, cfg(hidden_sizes=[8], compile=True), CPU)
    plain = cls(OBS, ACT, cfg(hidden_sizes=[8], compile=False), CPU)
    plain.load_full_state(compiled.full_state())
    obs = torch.randn(3, OBS)
    compiled_out = compiled._actor(obs)  # the torch.compile'd call path the updates use, not the eager module
    assert isinstance(compiled._actor, torch._dynamo.OptimizedModule)
    torch.testing.assert_close(plain.act(obs, deterministic=True), compiled_out if name == "td3"
                               else torch.tanh(compiled_out[0]))


@pytest.mark.parametrize("name", ["sac", "td3", "tqc"])
def test_target_networks_stay_grad_free_leaves_after_updates(name):
    """Polyak updates must not build an autograd graph on the targets (it grows with every update: a leak)."""
    agent = make_agent(name, 0)
    targets = [m for n, m in vars(agent).items() if n.endswith("_target") and isinstance(m, torch.nn.Module)]
    assert targets
    for step in range(3):
        do_update(agent, name, step)
    for target in targets:
        for p in target.parameters():
            assert not p.requires_grad and p.grad_fn is None and p.is_leaf


def test_sac_critic_target_masks_only_terminated_transitions(monkeypatch):
    """target = r + gamma * (1 - terminated) * (min target Q(s', a') - alpha log pi(a'|s'))."""
    gamma, alpha = 0.9, 0.5
    agent = SAC(OBS, ACT, SACConfig(hidden_sizes=[16], gamma=gamma, init_alpha=alpha, autotune_alpha=False), CPU)
    monkeypatch.setattr(sac_module, "squashed_gaussian_sample", deterministic_sample)
    for terminated in (0.0, 1.0):
        batch = random_batch(3, terminated=terminated)
        batch.terminated[::2] = 1.0 - terminated  # mix both kinds in one batch
        with torch.no_grad():
            mean, log_std = agent.actor(batch.next_obs)
            next_q = agent.q_values(agent.critic_target, batch.next_obs, torch.tanh(mean)).min(0).values
            soft_next = next_q + alpha * log_std.sum(-1)
            target = batch.reward + gamma * (1.0 - batch.terminated) * soft_next
            q = agent.q_values(agent.critic, batch.obs, batch.action)
            expected = 0.5 * ((q - target) ** 2).mean(1).sum()
            wrong = 0.5 * ((q - batch.reward - gamma * soft_next) ** 2).mean(1).sum()  # bootstrapping everything
        assert not torch.isclose(expected, wrong)
        metrics = agent.update(batch)
        torch.testing.assert_close(metrics["critic_loss"], expected)


def test_td3_critic_target_masks_only_terminated_transitions():
    gamma = 0.8
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16], gamma=gamma, target_policy_noise=0.0), CPU)
    batch = random_batch(4)
    assert 0 < batch.terminated.sum() < len(batch.terminated)
    with torch.no_grad():
        next_action = agent.actor_target(batch.next_obs)
        next_q = agent.critic_target(torch.cat([batch.next_obs, next_action], -1)).squeeze(-1).min(0).values
        target = batch.reward + gamma * (1.0 - batch.terminated) * next_q
        q = agent.critic(torch.cat([batch.obs, batch.action], -1)).squeeze(-1)
        expected = ((q - target) ** 2).mean(1).sum()
    torch.testing.assert_close(agent.update(batch)["critic_loss"], expected)


def test_td3_first_critic_equals_member_zero():
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16, 8]), CPU)
    x = torch.randn(10, OBS + ACT)
    torch.testing.assert_close(agent._first_critic(x), agent.critic(x)[0])
    assert not torch.allclose(agent.critic(x)[0], agent.critic(x)[1])


def test_td3_delays_actor_updates():
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16], policy_delay=2), CPU)
    actor_before = copy.deepcopy(agent.actor.state_dict())
    assert "actor_loss" not in agent.update(random_batch(0))
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())
    assert "actor_loss" in agent.update(random_batch(1))
    assert not all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())


@pytest.mark.parametrize(("target_entropy", "direction"), [(-2.0 * ACT, -1.0), (2.0 * ACT, 1.0)])
def test_sac_temperature_falls_while_entropy_exceeds_the_target_and_rises_below_it(monkeypatch, target_entropy,
                                                                                   direction):
    """alpha loss = -mean(log alpha * (log pi + target entropy)); its gradient, mean entropy - target entropy, lowers
    alpha while the policy is more random than the target and raises it while it is less."""
    lr, log_alpha = 0.01, math.log(0.5)
    config = SACConfig(hidden_sizes=[16], init_alpha=0.5, alpha_lr=lr, target_entropy=target_entropy)
    agent = SAC(OBS, ACT, config, CPU)
    monkeypatch.setattr(sac_module, "squashed_gaussian_sample", deterministic_sample)
    batch = random_batch(5)
    with torch.no_grad():
        entropy = agent.actor(batch.obs)[1].sum(-1)  # -log pi of the deterministic sample
    assert ((entropy - target_entropy) * direction < 0).all()
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["alpha_loss"], -(log_alpha * (target_entropy - entropy)).mean())
    # Adam's first step moves log alpha by lr against the sign of the gradient
    torch.testing.assert_close(agent.log_alpha.detach(), torch.tensor(log_alpha + direction * lr))
    for _ in range(4):
        before = agent.log_alpha.item()
        agent.update(batch)
        assert (agent.log_alpha.item() - before) * direction > 0


def test_td3_target_smoothing_noise_stays_within_the_clip_of_the_target_action():
    clip = 0.3
    torch.manual_seed(0)
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16], target_policy_noise=100.0, target_noise_clip=clip), CPU)
    batch = random_batch(6, size=256)
    with torch.no_grad():
        target_action = agent.actor_target(batch.next_obs)
    critic_target, scored = agent._critic_target, []

    def spy(x: torch.Tensor) -> torch.Tensor:  # records the (s', a') the target critics score
        scored.append(x)
        return critic_target(x)

    object.__setattr__(agent, "_critic_target", spy)
    agent.update(batch)
    next_action = scored[0][:, OBS:]
    offset = next_action - target_action
    assert next_action.abs().max() <= 1.0
    assert offset.abs().max() <= clip + 1e-6
    # noise of std 100 is nearly always clipped: away from the bounds a' sits exactly `clip` from the target action
    inside = target_action.abs() < 1.0 - clip
    assert inside.float().mean() > 0.9
    assert ((offset[inside].abs() - clip).abs() < 1e-5).float().mean() > 0.9


def test_ppo_minibatch_loss_matches_a_hand_computed_value():
    """Policy N(0, 1) and value 1 everywhere (zeroed output layers), so every term can be worked out by hand."""
    config = PPOConfig(hidden_sizes=[4], clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5)
    agent = PPO(2, 1, config, CPU)
    with torch.no_grad():
        agent.policy_net[-1].weight.zero_()
        agent.value_net[-1].weight.zero_()
        agent.value_net[-1].bias.fill_(1.0)
    actions = torch.tensor([[0.5], [-1.0], [1.5], [0.0]])
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.9])
    log_prob = -0.5 * actions[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    column = [[1.0, -1.0, 2.0, 0.0], [2.0, 0.0, 1.1, 3.0], [0.5, 1.2, 1.0, 0.0]]
    advantages, returns, old_values = (torch.tensor(x).unsqueeze(-1) for x in column)
    loss, stats = agent._loss(torch.randn(4, 2), actions, (log_prob - ratios.log()).unsqueeze(-1), advantages,
                              returns, old_values)

    adv = [(a - 0.5) / math.sqrt(5 / 3) for a in (1.0, -1.0, 2.0, 0.0)]  # mean 0.5, sample std sqrt(5/3)
    # samples 0 and 1 leave the clip range [0.8, 1.2]; there the clipped ratio gives the smaller surrogate
    policy_loss = -(adv[0] * 1.2 + adv[1] * 0.8 + adv[2] * 1.1 + adv[3] * 0.9) / 4
    # value 1 clipped to old value +- 0.2: 0.7, 1.0, 1.0, 0.2; the larger squared error of each pair
    value_loss = (max(1.0, 1.3**2) + max(1.0, 1.0) + max(0.01, 0.01) + max(4.0, 2.8**2)) / 4
    entropy = 0.5 + 0.5 * math.log(2 * math.pi)
    approx_kl = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.1, 0.9)) / 4
    expected = dict(zip(STAT_NAMES, (policy_loss, value_loss, entropy, approx_kl, 0.5), strict=True))
    for name, value in zip(STAT_NAMES, stats, strict=True):
        assert value.item() == pytest.approx(expected[name], rel=1e-5), name
    assert loss.item() == pytest.approx(policy_loss - 0.01 * entropy + 0.5 * value_loss, rel=1e-5)


def test_ppo_stops_the_update_once_approx_kl_exceeds_one_and_a_half_target_kl():
    agent = PPO(OBS, ACT, PPOConfig(hidden_sizes=[16], minibatch_size=4, epochs=3, target_kl=0.1), CPU, num_envs=2)
    rollout = random_rollout(0, agent)  # 16 transitions: 4 minibatches per epoch
    kls = iter([0.0, 0.14, 0.16] + [0.0] * 12)
    loss = agent._loss

    def scripted_kl(*minibatch: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        value, stats = loss(*minibatch)
        stats = list(stats)
        stats[STAT_NAMES.index("approx_kl")] = torch.tensor(next(kls))
        return value, tuple(stats)

    object.__setattr__(agent, "_loss", scripted_kl)
    metrics = agent.update(rollout)
    # 0.14 exceeds target_kl but not 1.5 x target_kl; 0.16 does: no more steps in this epoch or any later one
    assert agent.num_updates == 2
    assert metrics["approx_kl"].item() == pytest.approx(0.07)  # stats of the applied minibatches only


def test_ensemble_members_are_independent():
    torch.manual_seed(0)
    ens = EnsembleMLP(3, 4, [8, 8], 2)
    x = torch.randn(5, 4)
    before = ens(x).detach().clone()
    assert before.shape == (3, 5, 2)
    with torch.no_grad():
        for layer in ens.layers:
            layer.weight[1] += 1.0
            layer.bias[1] -= 0.5
    after = ens(x)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    torch.testing.assert_close(after[2], before[2], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])
    # gradients of one member's output reach only that member's weights
    ens.zero_grad()
    ens(x)[0].sum().backward()
    for layer in ens.layers:
        assert layer.weight.grad[0].abs().sum() > 0
        assert layer.weight.grad[1:].abs().sum() == 0 and layer.bias.grad[1:].abs().sum() == 0


def test_ensemble_matches_separate_linear_layers():
    torch.manual_seed(1)
    ens = EnsembleMLP(2, 3, [4], 1, act="tanh")
    x = torch.randn(6, 3)
    for member in range(2):
        first, last = ens.layers
        h = torch.tanh(x @ first.weight[member] + first.bias[member])
        torch.testing.assert_close(ens(x)[member], h @ last.weight[member] + last.bias[member])
    per_member = torch.randn(2, 6, 3)  # [size, batch, in]: each member its own input
    torch.testing.assert_close(ens(per_member)[1], ens(per_member[1])[1])
