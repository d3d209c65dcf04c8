"""Query selection (uniform, disagreement, entropy, k-center and the combined variants) and feedback schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.queries import (
    METHODS,
    FeedbackSchedule,
    PreferenceModel,
    query_features,
    select_queries,
)
from reward_learning.segments import Segments


def segs(obs: torch.Tensor) -> Segments:
    """Segments with the given observations [q, L, d]; the episode id is the candidate index."""
    q, length = obs.shape[:2]
    return Segments(
        obs=obs, action=torch.zeros(q, length, 1), next_obs=obs, env_reward=torch.zeros(q, length),
        components=torch.zeros(q, length, 1), episode=torch.arange(q), start=torch.zeros(q, dtype=torch.int64),
    )


def blank_pairs(q: int) -> tuple[Segments, Segments]:
    return segs(torch.zeros(q, 2, 1)), segs(torch.zeros(q, 2, 1))


class FakeEnsemble:
    """Fixed per-member P(right) for each candidate, looked up by the left segment's episode id."""

    def __init__(self, probs) -> None:
        self.probs = torch.as_tensor(probs, dtype=torch.float32)

    def prob_right(self, left: Segments, right: Segments) -> torch.Tensor:
        return self.probs[:, left.episode]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_uniform_distinct_and_reproducible():
    left, right = blank_pairs(40)
    picked = select_queries("uniform", left, right, 25, model=None, rng=rng())
    assert picked.dtype == np.int64 and len(picked) == 25 and len(set(picked.tolist())) == 25
    assert picked.min() >= 0 and picked.max() < 40
    np.testing.assert_array_equal(picked, select_queries("uniform", left, right, 25, model=None, rng=rng()))
    assert len(select_queries("uniform", left, right, 0, model=None, rng=rng())) == 0


def test_disagreement_picks_pairs_members_disagree_on():
    probs = [[0.5, 0.1, 0.5, 0.9, 0.2, 0.7],
             [0.5, 0.9, 0.5, 0.9, 0.8, 0.7],
             [0.5, 0.5, 0.5, 0.9, 0.5, 0.6]]
    model = FakeEnsemble(probs)
    assert isinstance(model, PreferenceModel)
    left, right = blank_pairs(6)
    assert select_queries("disagreement", left, right, 2, model=model, rng=rng()).tolist() == [1, 4]


def test_entropy_averages_member_entropies():
    # pair 0: members sure but opposite (mean p = 0.5, yet each member's entropy is low)
    # pair 2: every member unsure (p = 0.45); pair 1: all sure; pair 3: mildly unsure
    probs = [[0.01, 0.95, 0.45, 0.3],
             [0.99, 0.95, 0.45, 0.3]]
    left, right = blank_pairs(4)
    picked = select_queries("entropy", left, right, 2, model=FakeEnsemble(probs), rng=rng())
    assert picked.tolist() == [2, 3]


def clustered_obs(centres, per_cluster: int = 5, seed: int = 0) -> torch.Tensor:
    """[len(centres) * per_cluster, L=2, d=2] observations scattered tightly around each centre."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float32)
    points = centres.repeat_interleave(per_cluster, 0)[:, None, :].repeat(1, 2, 1)
    return points + 0.01 * torch.randn(points.shape, generator=gen)


def test_query_features_concatenate_both_observation_sequences():
    left, right = segs(torch.arange(12.0).reshape(2, 3, 2)), segs(-torch.arange(12.0).reshape(2, 3, 2))
    features = query_features(left, right)
    assert features.shape == (2, 12) and features.dtype == torch.float32
    assert features[1].tolist() == list(range(6, 12)) + [-float(v) for v in range(6, 12)]


def test_kcenter_covers_clusters_and_avoids_labelled():
    obs = clustered_obs([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    left, right = segs(obs), segs(obs.clone())
    cluster = lambda idx: sorted((np.asarray(idx) // 5).tolist())
    for seed in range(3):
        picked = select_queries("kcenter", left, right, 3, model=None, rng=rng(seed))
        assert cluster(picked) == [0, 1, 2]
    labelled = query_features(left[[0, 1]], right[[0, 1]])  # cluster 0 is already labelled
    picked = select_queries("kcenter", left, right, 2, model=None, rng=rng(), labelled_features=labelled)
    assert cluster(picked) == [1, 2]
    picked = select_queries("kcenter", left, right, 15, model=None, rng=rng(), labelled_features=labelled)
    assert sorted(picked.tolist()) == list(range(15))
    with pytest.raises(ValueError, match="labelled_features"):
        select_queries("kcenter", left, right, 2, model=None, rng=rng(), labelled_features=torch.zeros(3, 5))


@pytest.mark.parametrize("method", ["kcenter_disagreement", "kcenter_entropy"])
def test_combined_methods_stay_in_the_top_half(method):
    # candidates 0-3: uncertain but close together; 4-7: confident outliers plain k-center would pick
    obs = clustered_obs([[0.0, 0.0]] * 4 + [[50.0, 0.0], [0.0, 50.0], [-50.0, 0.0], [0.0, -50.0]], per_cluster=1)
    left, right = segs(obs), segs(obs.clone())
    probs = [[0.5, 0.3, 0.6, 0.4, 0.99, 0.99, 0.01, 0.01],
             [0.4, 0.7, 0.5, 0.6, 0.99, 0.98, 0.01, 0.02]]
    model = FakeEnsemble(probs)
    labelled = query_features(left[[0]], right[[0]])
    plain = select_queries("kcenter", left, right, 2, model=None, rng=rng(), labelled_features=labelled)
    assert set(plain.tolist()) <= {4, 5, 6, 7}
    picked = select_queries(method, left, right, 2, model=model, rng=rng(), labelled_features=labelled)
    assert len(set(picked.tolist())) == 2 and set(picked.tolist()) <= {0, 1, 2, 3}
    picked = select_queries(method, left, right, 5, model=model, rng=rng())  # more than half: keep the top 5
    assert len(set(picked.tolist())) == 5 and {0, 1, 2, 3} <= set(picked.tolist())


def test_selection_errors():
    left, right = blank_pairs(4)
    with pytest.raises(ValueError, match="allowed: " + ", ".join(METHODS)):
        select_queries("random", left, right, 2, model=None, rng=rng())
    for method in ("disagreement", "entropy", "kcenter_disagreement", "kcenter_entropy"):
        with pytest.raises(ValueError, match="needs a reward model"):
            select_queries(method, left, right, 2, model=None, rng=rng())
    with pytest.raises(ValueError, match="cannot select 5 queries from 4"):
        select_queries("uniform", left, right, 5, model=None, rng=rng())
    with pytest.raises(ValueError, match="4 left segments but 3 right"):
        select_queries("uniform", left, right[:3], 2, model=None, rng=rng())

    class FlatModel:
        def prob_right(self, left: Segments, right: Segments) -> torch.Tensor:
            return torch.full((len(left),), 0.5)

    with pytest.raises(ValueError, match=r"prob_right must return \[ensemble_size, 4\], got \(4,\)"):
        select_queries("entropy", left, right, 2, model=FlatModel(), rng=rng())


def test_constant_schedule_capped_by_budget():
    schedule = FeedbackSchedule(batch_size=128)
    assert schedule.queries_for_round(5000, 100_000, remaining_budget=1000) == 128
    assert schedule.queries_for_round(5000, 100_000, remaining_budget=50) == 50
    assert schedule.queries_for_round(5000, 100_000, remaining_budget=0) == 0


def test_linear_decay_schedule():
    schedule = FeedbackSchedule(batch_size=100, kind="linear_decay")
    rounds = [schedule.queries_for_round(step, 1000, remaining_budget=10_000) for step in (0, 250, 500, 995, 1000)]
    assert rounds == [100, 75, 50, 1, 1]  # int(100 * 0.005) = 0 is lifted to 1 while budget remains
    assert schedule.queries_for_round(250, 1000, remaining_budget=30) == 30
    assert schedule.queries_for_round(999, 1000, remaining_budget=0) == 0
    assert FeedbackSchedule(1000, "linear_decay").queries_for_round(1000, 1000, 10_000) == 10  # B-Pref: fraction 0.01
    with pytest.raises(ValueError, match="allowed: constant, linear_decay"):
        FeedbackSchedule(100, "exponential")
    with pytest.raises(ValueError, match="batch_size"):
        FeedbackSchedule(0)
