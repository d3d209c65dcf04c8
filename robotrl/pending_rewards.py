"""Rewards scored many transitions per call, for reward sources that cost far more per call than per transition: a
vision-language model (render and embed frames, `robotrl.vlm_rewards`) or reward code run in a sandboxed worker
process (~0.3 ms of inter-process round trip per call, whatever the batch).

Off-policy agents: a transition enters the replay buffer with a placeholder reward of 0 and its row waits as a pending
storage index; pending rows are scored together when a batch fills, before every update round and before every
checkpoint, so no update ever trains on, and no checkpoint saves, a placeholder. `score_every: step` scores each
vector step on its own (one call per step: the baseline of the benchmarks).

PPO keeps no replay buffer: `RolloutRewards` scores the reward code of a whole rollout in one call when it ends, then
scales the rewards and bootstraps through time limits in step order, which gives the numbers of per-step scoring.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from reward_learning.sandbox import SandboxedReward
from reward_learning.sources import RewardSource, Transitions
from robotrl.agents import AGENTS
from robotrl.config import ConfigError, RunConfig
from robotrl.core.buffers import ReplayBuffer, RolloutBuffer


class PlaceholderReward(RewardSource):
    """The reward a transition holds until it is scored in a batch: 0 (overwritten before any update reads it)."""

    needs = frozenset({"terminated"})

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, batch: Transitions) -> torch.Tensor:
        return torch.zeros_like(batch["terminated"])


def check_buffer_holds_a_batch(config: RunConfig, batch_key: str, batch_size: int) -> None:
    """Pending rows must still be stored when they are scored: the replay buffer must hold a batch and a step."""
    needed = batch_size + config.env.num_envs
    if config.algo.buffer_size < needed:
        raise ConfigError(f"algo.buffer_size ({config.algo.buffer_size}) must hold at least one batch of rewards "
                          f"scored together ({batch_key} + env.num_envs = {needed}); raise it, lower {batch_key}, "
                          f"or set score_every: step")


class PendingRewards(ABC):
    """Replay-buffer rows whose rewards are placeholders until `score` computes them, a batch of rows per call."""

    def __init__(self, batch_size: int, per_step: bool) -> None:
        self.batch_size = batch_size
        self.per_step = per_step
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0

    @abstractmethod
    def score(self, buffer: ReplayBuffer, rows: torch.Tensor) -> torch.Tensor:
        """Rewards [len(rows)] of the stored rows at storage indices `rows`."""

    @abstractmethod
    def metrics(self) -> dict[str, float]:
        """Counters for the metrics log."""

    @abstractmethod
    def close(self) -> None:
        """Release what scoring holds (render env, worker process)."""

    def collect(self, buffer: ReplayBuffer, num_rows: int) -> None:
        """Note the `num_rows` rows just added to `buffer`; score now if a batch is full (or at every step)."""
        self._pending.append((buffer.pos - num_rows + torch.arange(num_rows, device=buffer.device)) % buffer.capacity)
        self._pending_rows += num_rows
        if self.per_step or self._pending_rows >= self.batch_size:
            self.flush(buffer)

    def flush(self, buffer: ReplayBuffer) -> None:
        """Score every pending row and write its reward in place (call before training on or saving the buffer)."""
        if self._pending:  # cleared only once written: a stop signal while scoring leaves them pending for the save
            rows = torch.cat(self._pending)
            buffer.storage["reward"][rows] = self.score(buffer, rows).to(buffer.device)
            self._pending, self._pending_rows = [], 0


class CodeRewarder(PendingRewards):
    """Reward code scored in the sandbox many transitions per call: replay-buffer rows (off-policy agents) or a whole
    rollout (PPO, through `RolloutRewards`)."""

    def __init__(self, reward: SandboxedReward, batch_size: int = 256, per_step: bool = False) -> None:
        super().__init__(batch_size, per_step)
        self.reward = reward
        self.rows_scored = 0
        self.calls = 0
        self.seconds = 0.0

    @classmethod
    def from_config(cls, config: RunConfig, reward: SandboxedReward) -> CodeRewarder:
        """Score `reward` as `reward.code` asks; clear errors for impossible settings."""
        code = config.reward.code
        per_step = code.score_every == "step"
        if not per_step and not AGENTS[config.algo.name].on_policy:
            check_buffer_holds_a_batch(config, "reward.code.batch_size", code.batch_size)
        return cls(reward, code.batch_size, per_step)

    def score(self, buffer: ReplayBuffer, rows: torch.Tensor) -> torch.Tensor:
        """Gather the code's inputs of the stored rows and run them in one call."""
        return self.evaluate({key: buffer.storage[key][rows].float() for key in self.reward.needs})

    def evaluate(self, batch: Transitions) -> torch.Tensor:
        """The code's rewards of a batch of transitions, in one sandbox call."""
        started = time.perf_counter()
        reward = self.reward(batch)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.rows_scored += len(reward)
        return reward

    def metrics(self) -> dict[str, float]:
        """Transitions scored, sandbox calls and the time spent in them."""
        return {"reward_code/rows_scored": self.rows_scored, "reward_code/calls": self.calls,
                "reward_code/seconds": self.seconds}

    def close(self) -> None:
        """Stop the sandbox's worker process."""
        self.reward.close()


Scale = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RolloutRewards:
    """A PPO rollout's rewards, written into the rollout buffer in step order: scaled by the running return statistics
    (`scale`, when configured), plus gamma * V(final obs) where a time limit cut the episode.

    With reward code (`code`), the steps' transitions wait and are scored in one sandbox call when the rollout ends (or
    at each step with `score_every: step`); the scaling then runs over them in step order, so the rollout holds the same
    numbers as with per-step scoring. Other rewards are known at once and written as they come.
    """

    def __init__(self, rollout: RolloutBuffer, scale: Scale | None, code: CodeRewarder | None) -> None:
        self.rollout, self.scale, self.code = rollout, scale, code
        self._rewards: list[torch.Tensor] = []
        self._transitions: list[Transitions] = []
        self._after: list[tuple[np.ndarray, np.ndarray | None]] = []  # per waiting step: done, bootstrap

    def add(self, reward: torch.Tensor, done: np.ndarray, bootstrap: np.ndarray | None) -> None:
        """Write one vector step's reward (call after `rollout.add` of that step). `bootstrap` is gamma * V(final obs)
        of the envs a time limit cut and 0 elsewhere, or None when none was cut."""
        self._rewards.append(reward)
        self._after.append((done, bootstrap))
        self.flush()

    def defer(self, transitions: Transitions, done: np.ndarray, bootstrap: np.ndarray | None) -> None:
        """Note one vector step's transitions for the reward code to score (call after `rollout.add` of that step)."""
        assert self.code is not None, "only reward code is scored later"
        self._transitions.append(transitions)
        self._after.append((done, bootstrap))
        if self.code.per_step:
            self.flush()

    def flush(self) -> None:
        """Score the waiting transitions in one call and write the rewards of all waiting steps into the rollout."""
        if self.code is not None and self._transitions:
            batch = {key: torch.cat([step[key] for step in self._transitions]) for key in self._transitions[0]}
            self._rewards = list(self.code.evaluate(batch).reshape(len(self._transitions), -1))
            self._transitions = []
        first = self.rollout.step - len(self._after)
        for t, (reward, (done, bootstrap)) in enumerate(zip(self._rewards, self._after, strict=True), start=first):
            if self.scale is not None:
                reward = self.scale(reward, torch.as_tensor(done, device=reward.device))
            scaled = reward.cpu().numpy()
            self.rollout.set_reward(t, scaled if bootstrap is None else scaled + bootstrap)
        self._rewards, self._after = [], []
