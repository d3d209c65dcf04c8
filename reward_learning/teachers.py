"""Teachers label queries (pairs of segments); B-Pref's scripted teachers and a label budget.

Everyone who labels (a scripted teacher, the HERON decision tree, a person, a VLM) implements `Teacher`, so the
training loop never knows who answered.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reward_learning.segments import Label, Segments

RECENT_EPISODES = 10
"""How many of the latest episode returns set the skip/equal thresholds (B-Pref: a deque of length 10)."""


class Teacher(ABC):
    """Anyone who labels queries. `label` returns one `Label` code per query, SKIP included (skips are not dropped)."""

    name: str = "teacher"
    wants_candidates: bool = False  # whether `observe_candidates` should be called (it costs a copy of the pool)

    @abstractmethod
    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        """Int64 `Label` codes, one per query (pair `left[i]`, `right[i]`)."""

    def observe_returns(  # noqa: B027 - optional hook, a no-op for teachers without thresholds
        self, episode_returns: Sequence[float], segment_length: int, max_episode_steps: int
    ) -> None:
        """Tell the teacher the latest true episode returns before a feedback round (used by adaptive thresholds)."""

    def observe_candidates(self, candidates: Segments) -> None:  # noqa: B027 - optional hook, like observe_returns
        """Show the teacher the round's candidate segments, from which the queries are picked (HERON's margins are
        relative to their spread)."""

    def close(self) -> None:  # noqa: B027 - optional hook for teachers that hold resources (a model, a renderer)
        """Release what the teacher holds."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to keep labelling the same way (JSON-able)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - stateless by default
        """Restore what `state_dict` returned."""


class ScriptedTeacher(Teacher):
    """B-Pref's simulated teacher (Lee et al. 2021, `RewardModel.get_label`), labelling from the true reward.

    Knobs: `beta` rationality (None or <= 0: perfectly rational; > 0: Bradley-Terry, right preferred with probability
    softmax(beta * [sum_l, sum_r])[1]), `gamma` myopia (step t of an H-step segment weighted gamma**(H-1-t) for the
    preference, not for skip/equal), `eps_mistake` (flip the preference), `eps_skip`, `eps_equal`.

    Order, as in B-Pref: skip and equal are decided on undiscounted segment sums; the preference on the myopic sums
    (ties go LEFT); the mistake flip applies to that preference; EQUAL then overrides it, and SKIP overrides all.

    Thresholds: theta = eps * mean(last 10 episode returns) * segment_length / max_episode_steps, recomputed by
    `observe_returns`. A query is skipped iff max(sum_l, sum_r) <= theta_skip, labelled EQUAL iff
    |sum_l - sum_r| < theta_equal. Differences to B-Pref, all deliberate:

    - B-Pref multiplies by eps twice from the second feedback round on (its trainer passes `margin * eps` to a setter
      that multiplies by eps again). We use the published formula (eps once); `threshold_quirk=True` reproduces eps².
    - B-Pref only skips when theta_skip > 0, so with negative returns (e.g. Pendulum) skipping silently turns off. We
      skip whenever eps_skip > 0, with theta_skip = m - (1 - eps) * |m| for the mean segment return m: exactly
      eps * m when m >= 0 (B-Pref), and for m < 0 a threshold below the mean by (1 - eps) |m|, so that, as on
      positive tasks, only queries whose better segment is much worse than average are skipped (plain eps * m would
      be above most segment sums and skip nearly every query).
    - theta_equal uses |mean return|, so EQUAL labels do not silently turn off on negative-return tasks either
      (identical to B-Pref when returns are positive, as on all of B-Pref's tasks).
    - Before any returns are observed nothing is skipped and nothing is EQUAL (B-Pref's thresholds start at 0 too).
    - Randomness comes from the `rng` argument (B-Pref mixes numpy's and torch's global generators).

    Reward: `Segments.env_reward` by default, or `components @ weights` when `component_weights` is given (components
    missing from the mapping weigh 0).
    """

    def __init__(
        self,
        *,
        beta: float | None = None,
        gamma: float = 1.0,
        eps_mistake: float = 0.0,
        eps_skip: float = 0.0,
        eps_equal: float = 0.0,
        component_names: Sequence[str] | None = None,
        component_weights: Mapping[str, float] | None = None,
        threshold_quirk: bool = False,
        name: str = "scripted",
    ) -> None:
        for knob, value in (("eps_mistake", eps_mistake), ("eps_skip", eps_skip), ("eps_equal", eps_equal)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"teacher {knob} must be in [0, 1], got {value}")
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"teacher gamma must be in (0, 1], got {gamma}")
        if beta is not None and not math.isfinite(float(beta)):
            raise ValueError(f"teacher beta must be a finite number or None, got {beta}")
        self.beta = None if beta is None or float(beta) <= 0 else float(beta)
        self.gamma = float(gamma)
        self.eps_mistake = float(eps_mistake)
        self.eps_skip = float(eps_skip)
        self.eps_equal = float(eps_equal)
        self.threshold_quirk = bool(threshold_quirk)
        self.name = name
        self.component_names = None if component_names is None else list(component_names)
        self._weights: torch.Tensor | None = None
        if component_weights is not None:
            if self.component_names is None:
                raise ValueError("component_weights need component_names (the env's declared reward components)")
            unknown = sorted(set(component_weights) - set(self.component_names))
            if unknown:
                raise ValueError(f"unknown reward component(s) {unknown}; this env declares {self.component_names}")
            self._weights = torch.tensor(
                [float(component_weights.get(n, 0.0)) for n in self.component_names], dtype=torch.float64
            )
        self.rounds = 0
        self.theta_skip = 0.0
        self.theta_equal = 0.0

    def step_rewards(self, segments: Segments) -> np.ndarray:
        """The teacher's per-step reward of each segment, [q, L] float64; 0 on absorbing steps (after termination)."""
        if self._weights is None:
            rewards = segments.env_reward.detach().to("cpu", torch.float64)
        else:
            components = segments.components.detach().to("cpu", torch.float64)
            if components.shape[-1] != len(self._weights):
                raise ValueError(
                    f"segments carry {components.shape[-1]} reward components, the teacher declares "
                    f"{len(self._weights)}: {self.component_names}"
                )
            rewards = components @ self._weights
        return rewards.masked_fill(segments.absorbing.cpu(), 0.0).numpy()

    def label(self, left: Segments, right: Segments, rng: np.random.Generator) -> np.ndarray:
        if len(left) != len(right) or left.length != right.length:
            raise ValueError(f"query halves differ: {len(left)}x{left.length} vs {len(right)}x{right.length} steps")
        reward_l, reward_r = self.step_rewards(left), self.step_rewards(right)
        sum_l, sum_r = reward_l.sum(axis=1), reward_r.sum(axis=1)
        weights = self.gamma ** np.arange(left.length - 1, -1, -1, dtype=np.float64)
        myopic_l, myopic_r = reward_l @ weights, reward_r @ weights
        if self.beta is None:
            labels = (myopic_l < myopic_r).astype(np.int64)
        else:
            p_right = torch.sigmoid(torch.from_numpy(self.beta * (myopic_r - myopic_l))).numpy()
            labels = (rng.random(len(left)) < p_right).astype(np.int64)
        if self.eps_mistake > 0:
            flip = rng.random(len(left)) < self.eps_mistake
            labels[flip] = 1 - labels[flip]
        labels[np.abs(sum_l - sum_r) < self.theta_equal] = Label.EQUAL
        if self.eps_skip > 0 and self.rounds > 0:
            labels[np.maximum(sum_l, sum_r) <= self.theta_skip] = Label.SKIP
        return labels

    def observe_returns(self, episode_returns: Sequence[float], segment_length: int, max_episode_steps: int) -> None:
        """Recompute theta_skip/theta_equal from the last 10 returns; call once per feedback round (the quirk counts
        rounds). An empty sequence changes nothing."""
        if segment_length <= 0 or max_episode_steps <= 0:
            raise ValueError(
                f"segment_length ({segment_length}) and max_episode_steps ({max_episode_steps}) must be > 0"
            )
        recent = np.asarray(episode_returns, dtype=np.float64)[-RECENT_EPISODES:]
        if recent.size == 0:
            return
        if not np.isfinite(recent).all():
            raise ValueError(f"episode returns must be finite, got {recent.tolist()}")
        margin = float(recent.mean()) * segment_length / max_episode_steps
        self.rounds += 1
        quirk = self.threshold_quirk and self.rounds > 1
        scale = self.eps_skip * (self.eps_skip if quirk else 1.0)
        self.theta_skip = margin - (1.0 - scale) * abs(margin)
        self.theta_equal = self.eps_equal * (self.eps_equal if quirk else 1.0) * abs(margin)

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "theta_skip": self.theta_skip, "theta_equal": self.theta_equal}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rounds = int(state["rounds"])
        self.theta_skip = float(state["theta_skip"])
        self.theta_equal = float(state["theta_equal"])


_ORACLE: dict[str, float] = {"beta": -1.0, "gamma": 1.0, "eps_mistake": 0.0, "eps_skip": 0.0, "eps_equal": 0.0}
TEACHER_PRESETS: dict[str, dict[str, float]] = {
    "oracle": dict(_ORACLE),
    "noisy": {**_ORACLE, "beta": 1.0},
    "mistake": {**_ORACLE, "eps_mistake": 0.1},
    "skip": {**_ORACLE, "eps_skip": 0.1},
    "myopic": {**_ORACLE, "gamma": 0.9},
    "equal": {**_ORACLE, "eps_equal": 0.1},
}
"""B-Pref's six teachers (README), as ScriptedTeacher knobs."""

_OVERRIDABLE = (*_ORACLE, "threshold_quirk")


def make_teacher(
    preset: str = "oracle",
    *,
    component_names: Sequence[str] | None,
    component_weights: Mapping[str, float] | None = None,
    **overrides: float | bool | None,
) -> ScriptedTeacher:
    """A B-Pref preset teacher; `overrides` (beta, gamma, eps_*, threshold_quirk) replace the preset's knobs.

    The teacher is named after the preset, plus the overrides that change it, e.g. "mistake(eps_mistake=0.2)".
    """
    if preset not in TEACHER_PRESETS:
        close = difflib.get_close_matches(preset, TEACHER_PRESETS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown teacher preset {preset!r}{hint}. Known presets: {', '.join(TEACHER_PRESETS)}")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"unknown teacher knob(s) {unknown}; allowed: {', '.join(_OVERRIDABLE)}")
    knobs: dict[str, Any] = {**TEACHER_PRESETS[preset], "threshold_quirk": False}
    changed = {k: v for k, v in overrides.items() if knobs[k] != v}
    knobs.update(overrides)
    name = preset + ("(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")
    return ScriptedTeacher(**knobs, component_names=component_names, component_weights=component_weights, name=name)


class LabelBudget:
    """A total number of queries a run may ask; skipped queries count too (B-Pref's `total_feedback`)."""

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ValueError(f"label budget must be >= 0, got {total}")
        self.total = int(total)
        self.spent = 0

    @property
    def remaining(self) -> int:
        return self.total - self.spent

    def take(self, n: int) -> int:
        """Reserve up to `n` queries; returns how many may be asked (fewer once the budget runs out, then 0)."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of queries ({n})")
        granted = min(int(n), self.remaining)
        self.spent += granted
        return granted

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "spent": self.spent}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.total = int(state["total"])
        self.spent = int(state["spent"])
