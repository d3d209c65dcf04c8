"""Action distributions written as plain tensor maths (no torch.distributions objects in hot loops)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log density of a diagonal Gaussian, summed over the last axis."""
    return (-0.5 * ((x - mean) / log_std.exp()).pow(2) - log_std - LOG_SQRT_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return (log_std + 0.5 + LOG_SQRT_2PI).sum(-1)


def squashed_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised tanh-Gaussian sample in [-1, 1] and its log-probability (with the tanh Jacobian)."""
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    action = torch.tanh(pre_tanh)
    # log(1 - tanh(u)^2) = 2*(log 2 - u - softplus(-2u)), numerically stable
    log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return action, gaussian_log_prob(pre_tanh, mean, log_std) - log_det.sum(-1)
