"""Which segment pairs to ask about (PEBBLE/B-Pref query selection) and how many per feedback round.

Callers sample `CANDIDATE_FACTOR * num` random candidate pairs (B-Pref's `large_batch`, default 10) and let
`select_queries` keep `num` of them; "uniform" needs only `num` candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from reward_learning.segments import Segments

CANDIDATE_FACTOR = 10
"""Candidate pairs sampled per query wanted by the model-based and k-center methods (B-Pref `large_batch`)."""

MODEL_METHODS = ("disagreement", "entropy", "kcenter_disagreement", "kcenter_entropy")
METHODS = ("uniform", "kcenter", *MODEL_METHODS)

_DISTANCE_CHUNK = 4096


@runtime_checkable
class PreferenceModel(Protocol):
    """A reward-model ensemble that predicts preferences."""

    def prob_right(self, left: Segments, right: Segments) -> torch.Tensor:
        """[ensemble_size, q] probability, per member, that the right (second) segment is preferred."""
        ...


def query_features(left: Segments, right: Segments) -> torch.Tensor:
    """k-center features of each pair: both segments' observations, flattened and concatenated, [q, 2 * L * obs].

    B-Pref uses the observations only (no actions). Callers accumulate these for the labelled queries.
    """
    return torch.cat([left.obs.flatten(1), right.obs.flatten(1)], dim=1).to(torch.float32)


def _ensemble_probs(model: PreferenceModel, left: Segments, right: Segments) -> torch.Tensor:
    with torch.no_grad():
        probs = model.prob_right(left, right).detach().to("cpu", torch.float64)
    if probs.ndim != 2 or probs.shape[1] != len(left):
        raise ValueError(f"prob_right must return [ensemble_size, {len(left)}], got {tuple(probs.shape)}")
    return probs


def disagreement_scores(model: PreferenceModel, left: Segments, right: Segments) -> np.ndarray:
    """Std over the ensemble of P(right preferred), per pair (B-Pref `get_rank_probability`)."""
    return _ensemble_probs(model, left, right).std(dim=0, unbiased=False).numpy()


def entropy_scores(model: PreferenceModel, left: Segments, right: Segments) -> np.ndarray:
    """Ensemble mean of each member's preference entropy |sum p log p| (B-Pref `get_entropy`: mean of entropies)."""
    p = _ensemble_probs(model, left, right)
    member_entropy = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))
    return member_entropy.mean(dim=0).numpy()


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores; ties go to the lower index."""
    return np.argsort(-scores, kind="stable")[:k]


def _min_distance(points: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Distance from each point to its nearest reference (chunked so large labelled sets fit in memory)."""
    nearest = torch.full((len(points),), torch.inf)
    for start in range(0, len(refs), _DISTANCE_CHUNK):
        block = torch.cdist(points, refs[start : start + _DISTANCE_CHUNK])
        nearest = torch.minimum(nearest, block.min(dim=1).values)
    return nearest


def kcenter_greedy(
    features: torch.Tensor, num: int, rng: np.random.Generator, labelled: torch.Tensor | None = None
) -> np.ndarray:
    """Greedy k-center (coreset): repeatedly pick the point farthest from the labelled set and the picks so far.

    With nothing labelled the first pick is random (B-Pref always has labels here: its first round is uniform).
    """
    features = features.detach().to("cpu", torch.float32)
    if labelled is not None and len(labelled) > 0:
        labelled = labelled.detach().to("cpu", torch.float32)
        if labelled.shape[1:] != features.shape[1:]:
            raise ValueError(f"labelled_features {tuple(labelled.shape)} do not match features {tuple(features.shape)}")
        nearest = _min_distance(features, labelled)
    else:
        nearest = torch.full((len(features),), torch.inf)
    picked = np.empty(num, dtype=np.int64)
    for i in range(num):
        no_reference = bool(torch.isposinf(nearest).all())
        index = int(rng.integers(len(features))) if no_reference else int(torch.argmax(nearest))
        picked[i] = index
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(features - features[index], dim=1))
        nearest[index] = -torch.inf
    return picked


def select_queries(
    method: str,
    left: Segments,
    right: Segments,
    num: int,
    *,
    model: PreferenceModel | None,
    rng: np.random.Generator,
    labelled_features: torch.Tensor | None = None,
) -> np.ndarray:
    """Indices of `num` distinct candidate pairs (`left[i]`, `right[i]`) to ask the teacher about.

    Methods (B-Pref `feed_type` 0-5): "uniform"; "disagreement" (top-num by ensemble std of P(right)); "entropy"
    (top-num by mean member entropy); "kcenter" (greedy k-center on `query_features`, away from
    `labelled_features`); "kcenter_disagreement" / "kcenter_entropy" (keep the top half of the candidates by that
    score, as B-Pref's `int(0.5 * candidates)`, but never fewer than `num`; then k-center among them).
    """
    if method not in METHODS:
        raise ValueError(f"unknown query selection method {method!r}; allowed: {', '.join(METHODS)}")
    if method in MODEL_METHODS and model is None:
        raise ValueError(f"query selection {method!r} needs a reward model (ensemble); use 'uniform' or 'kcenter'")
    candidates = len(left)
    if len(right) != candidates:
        raise ValueError(f"{candidates} left segments but {len(right)} right segments")
    if not 0 <= num <= candidates:
        raise ValueError(f"cannot select {num} queries from {candidates} candidate pairs")
    if method == "uniform":
        return rng.choice(candidates, size=num, replace=False).astype(np.int64)
    if method == "disagreement":
        return _top(disagreement_scores(model, left, right), num)
    if method == "entropy":
        return _top(entropy_scores(model, left, right), num)
    pool = np.arange(candidates)
    if method != "kcenter":
        scores = disagreement_scores if method == "kcenter_disagreement" else entropy_scores
        pool = _top(scores(model, left, right), max(num, candidates // 2))
    features = query_features(left[pool], right[pool])
    return pool[kcenter_greedy(features, num, rng, labelled_features)]


SCHEDULES = ("constant", "linear_decay")


@dataclass(frozen=True)
class FeedbackSchedule:
    """How many queries each feedback round asks.

    "constant": `batch_size`. "linear_decay" (B-Pref `reward_schedule=1`): int(batch_size * (total - step) / total),
    with B-Pref's fraction 0.01 when none of training is left, and never below 1 while budget remains. Always capped
    at the remaining budget.
    """

    batch_size: int
    kind: str = "constant"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown feedback schedule {self.kind!r}; allowed: {', '.join(SCHEDULES)}")
        if self.batch_size < 1:
            raise ValueError(f"feedback batch_size must be >= 1, got {self.batch_size}")

    def queries_for_round(self, step: int, total_steps: int, remaining_budget: int) -> int:
        """Queries to ask in the round at env step `step` of `total_steps`, given the labels left in the budget."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if remaining_budget <= 0:
            return 0
        wanted = self.batch_size
        if self.kind == "linear_decay":
            fraction = (total_steps - step) / total_steps
            wanted = max(1, int(self.batch_size * (fraction if fraction > 0 else 0.01)))
        return min(wanted, remaining_budget)
