"""Quantile Huber loss and quantile fractions shared by the distributional agents."""

from __future__ import annotations

import pytest
import torch

from robotrl.core.quantile import midpoint_taus, quantile_huber_loss


def loss_of(pred: float, target: float, tau: float, kappa: float = 1.0) -> float:
    return quantile_huber_loss(torch.tensor([[pred]]), torch.tensor([[target]]), torch.tensor([tau]), kappa).item()


def test_midpoint_taus():
    torch.testing.assert_close(midpoint_taus(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert midpoint_taus(1).item() == 0.5


@pytest.mark.parametrize(("pred", "target", "tau", "kappa", "expected"), [
    (0.0, 0.5, 0.3, 1.0, 0.3 * 0.5 * 0.25),  # delta = +0.5 < kappa: quadratic, weight tau
    (0.5, 0.0, 0.3, 1.0, 0.7 * 0.5 * 0.25),  # delta = -0.5: weight 1 - tau
    (0.0, 3.0, 0.3, 1.0, 0.3 * (3.0 - 0.5)),  # delta = +3 > kappa: linear
    (3.0, 0.0, 0.3, 1.0, 0.7 * (3.0 - 0.5)),  # delta = -3: linear, weight 1 - tau
    (0.0, 1.0, 0.8, 2.0, 0.8 * 0.5 * 1.0 / 2.0),  # Huber / kappa, quadratic inside |delta| <= kappa = 2
    (0.0, 5.0, 0.8, 2.0, 0.8 * 2.0 * (5.0 - 1.0) / 2.0),  # and linear outside
    (1.0, 1.0, 0.3, 1.0, 0.0),
])
def test_single_quantile_single_target(pred, target, tau, kappa, expected):
    assert loss_of(pred, target, tau, kappa) == pytest.approx(expected)


def test_tau_weighting_is_asymmetric():
    """An upper quantile (tau = 0.9) pays more for being below the target than for being above it."""
    assert loss_of(0.0, 2.0, 0.9) == pytest.approx(9 * loss_of(2.0, 0.0, 0.9))
    assert loss_of(0.0, 2.0, 0.1) == pytest.approx(loss_of(2.0, 0.0, 0.9))


def test_reduction_means_over_targets_sums_over_quantiles_means_over_batch():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, generator=gen), 3 * torch.randn(3, 5, generator=gen)
    taus = midpoint_taus(4)
    per_pair = torch.tensor([[[loss_of(pred[b, i].item(), target[b, j].item(), taus[i].item()) for j in range(5)]
                              for i in range(4)] for b in range(3)])
    expected = per_pair.mean(-1).sum(-1).mean()
    torch.testing.assert_close(quantile_huber_loss(pred, target, taus), expected)
    # per-transition taus [B, M] (IQN) give the same result when every row holds the same fractions
    torch.testing.assert_close(quantile_huber_loss(pred, target, taus.expand(3, 4)), expected)
    # leading dims (e.g. critics [N, B, M]) are averaged like the batch
    stacked = torch.stack([pred, pred + 1.0])
    both = (quantile_huber_loss(pred, target, taus) + quantile_huber_loss(pred + 1.0, target, taus)) / 2
    torch.testing.assert_close(quantile_huber_loss(stacked, target, taus), both)


@pytest.mark.parametrize("gap", [0.5, 3.0])  # inside and outside the quadratic zone
def test_gradient_pushes_pred_towards_target_harder_for_upper_quantiles(gap):
    def grad(tau: float, pred: float, target: float) -> float:
        p = torch.tensor([[pred]], requires_grad=True)
        quantile_huber_loss(p, torch.tensor([[target]]), torch.tensor([tau])).backward()
        return p.grad.item()

    below_hi, below_lo = grad(0.9, 0.0, gap), grad(0.1, 0.0, gap)
    assert below_hi < below_lo < 0  # descent raises pred, 9x harder for tau = 0.9
    assert below_hi == pytest.approx(9 * below_lo)
    above_hi, above_lo = grad(0.9, gap, 0.0), grad(0.1, gap, 0.0)
    assert above_lo > above_hi > 0  # above the target the low quantile is pulled down harder


def test_minimiser_is_the_quantile_of_the_targets():
    """With kappa -> 0 the loss is quantile regression: its minimiser over samples is their tau-quantile."""
    target = torch.linspace(0.0, 1.0, 1001).unsqueeze(0)
    grid = torch.linspace(0.0, 1.0, 201)
    taus = torch.tensor([0.1, 0.5, 0.8])
    losses = torch.stack([torch.stack([quantile_huber_loss(torch.tensor([[g]]), target, tau[None], kappa=1e-4)
                                       for g in grid.tolist()]) for tau in taus])
    torch.testing.assert_close(grid[losses.argmin(1)], taus, atol=0.006, rtol=0)
