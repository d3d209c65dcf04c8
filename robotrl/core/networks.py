"""Agent-side network helpers (fast acting paths, PPO init) plus the shared MLP/ensemble blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reward_learning.networks import ACTIVATIONS, EnsembleLinear, EnsembleMLP, activation, mlp

__all__ = ["ACTIVATIONS", "EnsembleLinear", "EnsembleMLP", "HostMLP", "activation", "fast_forward", "mlp",
           "orthogonal_init"]

FUNCTIONAL = {nn.ReLU: torch.relu, nn.LeakyReLU: F.leaky_relu, nn.Tanh: torch.tanh, nn.ELU: F.elu, nn.GELU: F.gelu,
              nn.SiLU: F.silu}


def fast_forward(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Forward through an `mlp` without per-module call overhead (for per-step acting in collection loops)."""
    for layer in net:
        x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else FUNCTIONAL[type(layer)](x)
    return x


NUMPY_FUNCTIONAL = {nn.Tanh: np.tanh, nn.ReLU: lambda x: np.maximum(x, 0.0)}


class HostMLP:
    """A zero-copy numpy view of a CPU `mlp`, for acting one step at a time without torch's per-op overhead.

    The arrays share memory with the parameters, so in-place optimiser steps and `load_state_dict` show through.
    """

    def __init__(self, net: nn.Sequential) -> None:
        self.layers: list[Any] = []
        for layer in net:
            if isinstance(layer, nn.Linear):
                self.layers.append((layer.weight.detach().numpy().T, layer.bias.detach().numpy()))
            else:
                self.layers.append(NUMPY_FUNCTIONAL[type(layer)])

    @staticmethod
    def supports(net: nn.Sequential) -> bool:
        """True when every parameter is a float32 CPU tensor and every activation has a numpy twin."""
        params_ok = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.parameters())
        return params_ok and all(isinstance(m, nn.Linear) or type(m) in NUMPY_FUNCTIONAL for m in net)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = x @ layer[0] + layer[1] if isinstance(layer, tuple) else layer(x)
        return x


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal weights with the given gain and zero biases for every Linear in `module` (PPO's usual init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


