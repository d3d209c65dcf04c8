"""Reward sources: anything that maps a batch of transitions to rewards. Agents never know which one they train on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch

Transitions = Mapping[str, torch.Tensor]
"""A batch of transitions as tensors with a shared leading axis.

Keys: `obs`, `action`, `next_obs`, `env_reward`, `components` ([batch, k], in the env's declared order),
`terminated`; optionally `truncated`, `episode_step`, `frames`."""


class RewardSource(ABC):
    """Maps a batch of transitions to a [batch] float tensor of rewards."""

    name: str = "reward"
    needs: frozenset[str] | None = None
    """Keys of the batch this source reads (None = all); lets hot loops skip building the rest."""

    @abstractmethod
    def __call__(self, batch: Transitions) -> torch.Tensor:
        """Rewards for each transition in `batch`."""

    def describe(self) -> dict[str, object]:
        """A JSON-able description saved with the run."""
        return {"name": self.name}


class EnvReward(RewardSource):
    """The environment's own reward, unchanged."""

    name = "env"
    needs = frozenset({"env_reward"})

    def __call__(self, batch: Transitions) -> torch.Tensor:
        return batch["env_reward"]


class ComponentReward(RewardSource):
    """A weighted sum of the env's reward components, e.g. to reweight or drop a term of the engineered reward."""

    name = "components"
    needs = frozenset({"components"})

    def __init__(self, component_names: Sequence[str], weights: Mapping[str, float]) -> None:
        unknown = sorted(set(weights) - set(component_names))
        if unknown:
            raise ValueError(f"unknown reward component(s) {unknown}; this env declares {list(component_names)}")
        self.component_names = list(component_names)
        self.weights = dict(weights)
        self._vector = torch.tensor([float(weights.get(n, 0.0)) for n in component_names], dtype=torch.float32)

    def __call__(self, batch: Transitions) -> torch.Tensor:
        components = batch["components"]
        return components @ self._vector.to(components.device)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "weights": self.weights}
