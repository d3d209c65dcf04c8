"""Multi-layer perceptrons, including ensembles evaluated in one batched matmul (fused twin critics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
}


def activation(name: str) -> type[nn.Module]:
    """Look up an activation class by its config name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu") -> nn.Sequential:
    """A plain MLP: Linear-act pairs for each hidden size, then a Linear head."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), activation(act)()]
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


FUNCTIONAL = {nn.ReLU: torch.relu, nn.Tanh: torch.tanh, nn.ELU: F.elu, nn.GELU: F.gelu, nn.SiLU: F.silu}


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


class EnsembleLinear(nn.Module):
    """`size` independent Linear layers applied to [size, batch, in] with one batched matmul."""

    def __init__(self, size: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # same distribution as nn.Linear's default init
        self.weight = nn.Parameter(torch.empty(size, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(size, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """An ensemble of identical MLPs (e.g. twin Q-functions) evaluated together; output [size, batch, out]."""

    def __init__(self, size: int, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu") -> None:
        super().__init__()
        self.size = size
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(size, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = activation(act)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [batch, in] (shared input) or [size, batch, in] to [size, batch, out]."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.size, -1, -1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)
