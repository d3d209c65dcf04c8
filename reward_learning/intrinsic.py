"""Unsupervised exploration reward for PEBBLE's pre-training: a k-nearest-neighbour state-entropy estimate.

r_int(s) = distance from s to its k-th nearest neighbour among the stored states (k = 5; the point itself, at
distance 0, is skipped), divided by a running standard deviation of those distances (as B-Pref's SAC does).
"""

from __future__ import annotations

import torch

from reward_learning.normalizers import RunningMeanStd


class StateEntropyReward:
    """kNN particle estimate of state entropy, normalised by a running std of the raw estimates."""

    def __init__(self, k: int = 5, chunk_size: int = 8192) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.chunk_size = k, chunk_size
        self.stats = RunningMeanStd((), prior_count=0.0)

    @torch.no_grad()
    def knn_distance(self, states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Distance from each of `states` [b, d] to its k-th nearest neighbour in `reference` [n, d] (n > k).

        `states` are assumed to be part of `reference` (their own zero distance is skipped, as in B-Pref).
        """
        if len(reference) <= self.k:
            raise ValueError(f"need more than k={self.k} reference states, got {len(reference)}")
        states = states.flatten(1).float()
        best: torch.Tensor | None = None
        for start in range(0, len(reference), self.chunk_size):
            chunk = reference[start:start + self.chunk_size].flatten(1).float().to(states.device)
            dist = torch.cdist(states, chunk)
            if best is not None:
                dist = torch.cat([best, dist], dim=1)
            best = dist.topk(min(self.k + 1, dist.shape[1]), dim=1, largest=False).values
        assert best is not None
        return best[:, self.k]

    @torch.no_grad()
    def __call__(self, states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Normalised intrinsic rewards for `states`; updates the running std with their raw estimates."""
        raw = self.knn_distance(states, reference)
        self.stats.update(raw)
        if self.stats.count < 2:  # one estimate has no spread yet
            return raw
        return raw / self.stats.var.sqrt().clamp_min(1e-8).to(raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)
