"""Mapping between the agents' action convention ([-1, 1] boxes, integer indices) and an env's action space."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class ActionAdapter:
    """Describes an action space to agents and rescales their actions for the env."""

    discrete: bool
    action_dim: int  # number of choices for discrete spaces, vector size for boxes
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def from_space(cls, space: gym.Space) -> ActionAdapter:
        if isinstance(space, gym.spaces.Discrete):
            return cls(True, int(space.n))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise ValueError(f"unbounded action space {space} is not supported: bound it with a wrapper")
            return cls(False, int(space.shape[0]), space.low.astype(np.float32), space.high.astype(np.float32))
        raise ValueError(f"action space {space} is not supported (use Discrete or a 1-D Box)")

    @property
    def stored_dim(self) -> int:
        """Width of an action as stored in buffers."""
        return 1 if self.discrete else self.action_dim

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` uniformly random stored actions [n, stored_dim]: indices for discrete spaces, else [-1, 1] vectors."""
        if self.discrete:
            return rng.integers(0, self.action_dim, size=(n, 1)).astype(np.float32)
        return rng.uniform(-1.0, 1.0, size=(n, self.action_dim)).astype(np.float32)

    def from_env(self, action: np.ndarray) -> np.ndarray:
        """A batch of env actions -> stored agent actions [n, stored_dim]: the inverse of `to_env` (for datasets)."""
        action = np.asarray(action, dtype=np.float32)
        if self.discrete:
            return action.reshape(-1, 1)
        assert self.low is not None and self.high is not None
        return np.clip((action - self.low) / (self.high - self.low) * 2.0 - 1.0, -1.0, 1.0)

    def applied(self, action: np.ndarray) -> np.ndarray:
        """The agent action(s) the env carries out: continuous ones clipped to [-1, 1] (a Gaussian policy's samples
        can fall outside), discrete ones as they are. Rewards and segments see these, not the raw samples."""
        return action if self.discrete else np.clip(action, -1.0, 1.0)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Agent action(s) -> env action(s): clip to [-1, 1] and rescale to [low, high], or take the integer index."""
        if self.discrete:
            return np.asarray(action).astype(np.int64).reshape(np.shape(action)[:-1] or ())
        return self.low + (self.applied(action) + 1.0) * 0.5 * (self.high - self.low)
