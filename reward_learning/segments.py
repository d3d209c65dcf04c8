"""Trajectory segments and preference labels: the data that teachers label and reward models learn from."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import IntEnum

import numpy as np
import torch


class Label(IntEnum):
    """A preference between the LEFT (first) and RIGHT (second) segment of a query."""

    LEFT = 0
    RIGHT = 1
    EQUAL = 2
    SKIP = 3

    @classmethod
    def parse(cls, value: str | int) -> Label:
        """Accept a name ('left', 'RIGHT', ...) or a code; raise ValueError naming the allowed values otherwise."""
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= int(value) <= cls.SKIP:
            return cls(int(value))
        allowed = ", ".join(m.name.lower() for m in cls)
        raise ValueError(f"unknown preference label {value!r}; allowed: {allowed}")


def right_preferred_target(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Soft target P(right preferred) for LEFT/RIGHT/EQUAL codes: 0, 1 and 0.5. SKIP labels must be removed first."""
    labels = torch.as_tensor(labels)
    if (labels == Label.SKIP).any() or (labels < 0).any() or (labels > Label.SKIP).any():
        raise ValueError("skipped or invalid labels carry no preference; filter them out before training")
    return torch.where(labels == Label.EQUAL, 0.5, labels.to(torch.float32))


_ID_FIELDS = ("episode", "start")


@dataclass
class Segments:
    """A batch of `q` trajectory slices of equal length `L`; every field has leading axes [q, L] except the ids.

    `episode` and `start` say where each slice comes from (episode id and the in-episode step of its first
    transition), so stores can reference slices instead of copying them.

    `state` optionally holds the simulator state after each step (see `envs.state`), so a slice can be re-rendered
    for people to label; it is empty ([q, L, 0]) when states were not recorded.

    `absorbing` marks steps after the episode terminated (a suffix of the slice; their other fields repeat the last
    real step). They let "fell over after 20 steps" be compared with "kept going for 50": the true reward there is 0
    and reward models give them reward 0 too (see `RewardEnsemble`), which matches how agents treat termination.
    """

    obs: torch.Tensor  # [q, L, *obs_shape]
    action: torch.Tensor  # [q, L, action_dim]
    next_obs: torch.Tensor  # [q, L, *obs_shape]
    env_reward: torch.Tensor  # [q, L]
    components: torch.Tensor  # [q, L, k]
    episode: torch.Tensor  # [q] int64
    start: torch.Tensor  # [q] int64
    absorbing: torch.Tensor = field(default=None)  # type: ignore[assignment]  # [q, L] bool; None = all False
    state: torch.Tensor = field(default=None)  # type: ignore[assignment]  # [q, L, d] float64; None = [q, L, 0]

    def __post_init__(self) -> None:
        q, length = self.obs.shape[:2]
        if self.absorbing is None:
            self.absorbing = torch.zeros((q, length), dtype=torch.bool, device=self.obs.device)
        if self.state is None:
            self.state = torch.zeros((q, length, 0), dtype=torch.float64, device=self.obs.device)
        for f in fields(self):
            value = getattr(self, f.name)
            expected = (q,) if f.name in _ID_FIELDS else (q, length)
            if tuple(value.shape[: len(expected)]) != expected:
                raise ValueError(f"Segments.{f.name} has shape {tuple(value.shape)}, expected leading {expected}")

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def length(self) -> int:
        return self.obs.shape[1]

    def __getitem__(self, index: slice | np.ndarray | torch.Tensor | list[int]) -> Segments:
        """Select queries (first axis) by slice, index array or boolean mask."""
        if isinstance(index, np.ndarray | list):
            index = torch.as_tensor(np.asarray(index))
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> Segments:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def crop(self, offset: torch.Tensor | int, length: int) -> Segments:
        """Sub-slices of `length` steps starting `offset` steps in (one offset per segment or a shared one)."""
        q = len(self)
        offset_t = torch.as_tensor(offset, device=self.obs.device).expand(q)
        if length > self.length or int(offset_t.max()) + length > self.length or int(offset_t.min()) < 0:
            raise ValueError(f"cannot crop {length} steps at offsets up to {int(offset_t.max())} from {self.length}")
        steps = offset_t[:, None] + torch.arange(length, device=self.obs.device)[None, :]
        rows = torch.arange(q, device=self.obs.device)[:, None]
        sliced = {f.name: getattr(self, f.name)[rows, steps] for f in fields(self) if f.name not in _ID_FIELDS}
        return Segments(**sliced, episode=self.episode, start=self.start + offset_t)

    def transitions(self) -> dict[str, torch.Tensor]:
        """The slices flattened to a [q*L] batch of transitions, in the key format of reward sources."""
        flat = {f.name: getattr(self, f.name).flatten(0, 1) for f in fields(self) if f.name not in _ID_FIELDS}
        flat["episode_step"] = (self.start[:, None] + torch.arange(self.length, device=self.start.device)).flatten()
        return flat

    @staticmethod
    def concat(parts: list[Segments]) -> Segments:
        """Stack several batches (same L and shapes) along the query axis."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return Segments(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Segments)})
