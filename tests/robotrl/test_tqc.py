"""TQC: truncated targets, quantile critics that learn return distributions, configs and checkpoints.

The Pendulum learning test is `test_tqc_pendulum_learns` in test_learning.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robotrl.agents import TQC, TQCConfig
from robotrl.config import ConfigError, load_config
from robotrl.core.buffers import ReplayBatch
from robotrl.trainer import CHECKPOINT, Trainer

CPU = torch.device("cpu")
OBS, ACT = 3, 1
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def make_tqc(**overrides) -> TQC:
    torch.manual_seed(0)
    return TQC(OBS, ACT, TQCConfig(hidden_sizes=[32], **overrides), CPU)


def random_batch(gen: torch.Generator, size: int, reward: torch.Tensor | None = None,
                 terminated: float | None = None) -> ReplayBatch:
    mixed = (torch.rand(size, generator=gen) < 0.3).float()
    term = torch.full((size,), terminated) if terminated is not None else mixed
    return ReplayBatch(obs=torch.randn(size, OBS, generator=gen), action=torch.rand(size, ACT, generator=gen) * 2 - 1,
                       reward=reward if reward is not None else torch.randn(size, generator=gen),
                       next_obs=torch.randn(size, OBS, generator=gen), terminated=term)


def test_truncation_keeps_the_smallest_atoms_pooled_per_transition():
    agent = make_tqc(num_critics=3, num_quantiles=4, top_quantiles_to_drop_per_net=1)
    quantiles = torch.randn(3, 2, 4)  # [N, B, M]
    kept = agent.truncated_atoms(quantiles)
    assert kept.shape == (2, 3 * (4 - 1))
    for b in range(2):
        pooled = quantiles[:, b].flatten().sort().values  # all N*M atoms of this transition, across critics
        torch.testing.assert_close(kept[b], pooled[:9], rtol=0, atol=0)
        assert kept[b].max() <= pooled[9:].min()


def test_dropping_as_many_quantiles_as_predicted_is_a_config_error():
    with pytest.raises(ValueError, match="top_quantiles_to_drop_per_net"):
        TQCConfig(num_quantiles=3, top_quantiles_to_drop_per_net=3)


def test_critic_updates_reduce_the_loss_on_a_fixed_batch():
    agent = make_tqc(num_critics=2, num_quantiles=5, critic_lr=3e-3)
    batch = random_batch(torch.Generator().manual_seed(1), 64)  # with bootstrapped and terminal transitions
    alpha = agent.log_alpha.detach().exp()

    def loss() -> float:
        torch.manual_seed(123)  # same next-action samples each time
        with torch.no_grad():
            return agent.critic_loss(batch, alpha)[0].item()

    before = loss()
    for _ in range(50):
        agent.update(batch)
    assert loss() < 0.7 * before  # not to zero: each transition's target atoms have a spread


def test_quantiles_of_a_stochastic_one_step_reward():
    """Terminal transitions with reward ~ U(0, 20): the critics learn its quantiles 2, 6, 10, 14, 18, in order.

    The tolerance covers the quantile Huber loss's own bias: with kappa = 1 its minimiser for U(a, b) is
    a + tau (b - a) + (1 - 2 tau) kappa / 2, i.e. at most 0.4 from the quantile here.
    """
    agent = make_tqc(num_critics=2, num_quantiles=5, top_quantiles_to_drop_per_net=1, critic_lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        agent.update(random_batch(gen, 128, reward=20 * torch.rand(128, generator=gen), terminated=1.0))
    batch = random_batch(gen, 256, terminated=1.0)
    with torch.no_grad():
        quantiles = agent.quantiles(agent.critic, batch.obs, batch.action)  # [N, B, M]
    assert (quantiles.diff(dim=-1) > 0).all()
    torch.testing.assert_close(quantiles.mean(dim=(0, 1)), torch.tensor([2.0, 6.0, 10.0, 14.0, 18.0]),
                               atol=1.0, rtol=0)


def test_actor_maximises_the_mean_of_all_atoms():
    agent = make_tqc(num_critics=2, num_quantiles=5)
    obs, action = torch.randn(4, OBS), torch.rand(4, ACT) * 2 - 1
    all_atoms = agent.critic(torch.cat([obs, action], -1))  # [N, B, M]
    torch.testing.assert_close(agent.policy_value(obs, action), all_atoms.mean(dim=(0, 2)))


def test_yaml_name_selects_tqc_and_unknown_keys_name_its_fields(tiny_config):
    config = tiny_config("tqc", algo={"num_quantiles": 7})
    assert isinstance(config.algo, TQCConfig) and config.algo.num_quantiles == 7 and config.algo.num_critics == 5
    with pytest.raises(ConfigError, match="num_quantile.*did you mean num_quantiles"):
        tiny_config("tqc", algo={"num_quantile": 7})
    for path in ("pendulum_tqc.yaml", "halfcheetah_tqc.yaml"):
        assert load_config(CONFIGS / path, ["device=cpu"]).algo.name == "tqc"


def test_trainer_checkpoint_round_trip(tiny_config, tmp_path):
    """A TQC run resumes from its checkpoint with identical networks, optimisers and counters."""
    half = Trainer(tiny_config("tqc", train={"total_steps": 200, "checkpoint_every": 200}), run_dir=tmp_path / "run",
                   progress=False)
    half.train()
    assert isinstance(half.agent, TQC) and half.agent.num_updates == 101
    resumed = Trainer.resume(tmp_path / "run", progress=False, overrides=("train.total_steps=300",))
    assert isinstance(resumed.agent, TQC) and resumed.agent.num_updates == 101
    for key, value in half.agent.state_dict().items():
        assert torch.equal(resumed.agent.state_dict()[key], value), key
    for name, opt in half.agent.optimizers().items():
        for (key, a), b in zip(opt.state_dict()["state"].items(), resumed.agent.optimizers()[name].state_dict()["state"]
                               .values(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a), (name, key)
    assert resumed.train().steps == 300 and (tmp_path / "run" / CHECKPOINT).exists()
    assert resumed.agent.num_updates == 201

