"""Tensor-maths distributions agree with torch.distributions."""

from __future__ import annotations

import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from robotrl.core.distributions import gaussian_entropy, gaussian_log_prob, squashed_gaussian_sample


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(4096, 3, generator=gen) * 2.0 - 1.0
    log_std = torch.rand(4096, 3, generator=gen) * 1.5 - 1.5
    torch.manual_seed(1)
    action, log_prob = squashed_gaussian_sample(mean, log_std)
    assert action.shape == (4096, 3) and log_prob.shape == (4096,)
    assert action.abs().max() <= 1.0
    keep = (action.abs() < 0.995).all(-1)  # atanh is ill-conditioned at |a| -> 1
    assert keep.sum() > 3000
    reference = TransformedDistribution(Normal(mean.double(), log_std.double().exp()), [TanhTransform()])
    expected = reference.log_prob(action.double()).sum(-1)
    torch.testing.assert_close(log_prob[keep].double(), expected[keep], atol=1e-4, rtol=1e-4)


def test_squashed_gaussian_samples_follow_the_pre_tanh_gaussian():
    mean = torch.tensor([[0.3, -0.6]]).expand(200_000, 2)
    log_std = torch.tensor([[-1.0, -0.5]]).expand(200_000, 2)
    torch.manual_seed(0)
    action, _ = squashed_gaussian_sample(mean, log_std)
    pre = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
    torch.testing.assert_close(pre.mean(0), torch.tensor([0.3, -0.6]), atol=0.01, rtol=0)
    torch.testing.assert_close(pre.std(0), torch.tensor([-1.0, -0.5]).exp(), atol=0.01, rtol=0)


def test_squashed_gaussian_sample_is_reparameterised():
    mean = torch.zeros(8, 2, requires_grad=True)
    log_std = torch.zeros(8, 2, requires_grad=True)
    action, log_prob = squashed_gaussian_sample(mean, log_std)
    (action.sum() + log_prob.sum()).backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert log_std.grad is not None and log_std.grad.abs().sum() > 0


def test_gaussian_log_prob_and_entropy_match_normal():
    gen = torch.Generator().manual_seed(2)
    x, mean, log_std = torch.randn(64, 4, generator=gen), torch.randn(64, 4, generator=gen), torch.randn(64, 4) * 0.5
    normal = Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), normal.log_prob(x).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std), normal.entropy().sum(-1))
