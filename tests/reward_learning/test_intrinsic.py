"""PEBBLE's unsupervised exploration reward: kNN state-entropy estimate normalised by a running std."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.intrinsic import StateEntropyReward


def brute_force_knn(states: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest neighbour, the state itself (distance 0, first after sorting) excluded."""
    dist = np.linalg.norm(states[:, None, :] - reference[None, :, :], axis=-1)
    return np.sort(dist, axis=1)[:, k]


def data(n: int = 200, d: int = 4, b: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(n, d, generator=g, dtype=torch.float64).float()
    states = reference[torch.randperm(n, generator=g)[:b]]
    return states, reference


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_distance_matches_brute_force(k):
    states, reference = data()
    got = StateEntropyReward(k=k).knn_distance(states, reference)
    assert got.shape == (30,)
    np.testing.assert_allclose(got.numpy(), brute_force_knn(states.numpy(), reference.numpy(), k), rtol=1e-4,
                               atol=1e-5)
    assert (got > 0).all()  # the self-distance 0 was skipped


def test_knn_distance_grows_with_k():
    states, reference = data()
    d1, d5 = StateEntropyReward(k=1).knn_distance(states, reference), StateEntropyReward(k=5).knn_distance(states,
                                                                                                         reference)
    assert (d5 >= d1).all() and (d5 > d1).any()


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64, 199, 200, 10_000])
def test_chunking_gives_the_same_distances(chunk_size):
    states, reference = data()
    full = StateEntropyReward(k=5, chunk_size=10_000).knn_distance(states, reference)
    chunked = StateEntropyReward(k=5, chunk_size=chunk_size).knn_distance(states, reference)
    torch.testing.assert_close(chunked, full)


def test_multi_dimensional_states_are_flattened():
    states, reference = data(d=6)
    est = StateEntropyReward(k=3)
    torch.testing.assert_close(est.knn_distance(states.reshape(-1, 2, 3), reference.reshape(-1, 2, 3)),
                               est.knn_distance(states, reference))


def test_isolated_state_gets_the_largest_reward():
    states, reference = data(n=100, d=2)
    outlier = torch.tensor([[50.0, 50.0]])
    reference = torch.cat([reference, outlier])
    distances = StateEntropyReward(k=5).knn_distance(torch.cat([states, outlier]), reference)
    assert int(distances.argmax()) == len(states)
    assert float(distances[-1]) > 40


def test_too_small_reference_and_bad_k_raise():
    est = StateEntropyReward(k=5)
    states, reference = data(n=5, b=2)
    with pytest.raises(ValueError, match="k=5"):
        est.knn_distance(states, reference)
    with pytest.raises(ValueError, match="k=5"):
        est(states, reference)
    assert est.stats.count == 0  # a failed call leaves the statistics alone
    states, reference = data(n=6, b=2)
    assert est.knn_distance(states, reference).shape == (2,)
    with pytest.raises(ValueError, match="k must be"):
        StateEntropyReward(k=0)


def test_normalised_rewards_use_the_running_std_of_all_raw_estimates():
    est = StateEntropyReward(k=3)
    seen: list[np.ndarray] = []
    for i, (n, b, scale) in enumerate([(50, 10, 1.0), (120, 25, 3.0), (300, 40, 0.5), (80, 1, 2.0)]):
        states, reference = data(n=n, b=b, seed=i)
        states, reference = states * scale, reference * scale
        raw = est.knn_distance(states, reference).numpy()
        seen.append(raw)
        reward = est(states, reference).numpy()
        everything = np.concatenate(seen)
        np.testing.assert_allclose(reward, raw / everything.std(), rtol=1e-5)
        assert est.stats.count == len(everything)
        assert float(est.stats.mean) == pytest.approx(everything.mean(), rel=1e-6)
        assert float(est.stats.var) ** 0.5 == pytest.approx(everything.std(), rel=1e-6)


def test_first_single_estimate_is_not_normalised():
    est = StateEntropyReward(k=2)
    states, reference = data(n=20, b=1)
    raw = est.knn_distance(states, reference)
    torch.testing.assert_close(est(states, reference), raw)


def test_state_dict_round_trip():
    est = StateEntropyReward(k=3)
    for seed in range(3):
        est(*data(n=60, b=15, seed=seed))
    restored = StateEntropyReward(k=3)
    restored.load_state_dict(est.state_dict())
    assert restored.state_dict() == est.state_dict()
    states, reference = data(n=60, b=15, seed=9)
    torch.testing.assert_close(restored(states, reference), est(states, reference))
    fresh = StateEntropyReward(k=3)
    assert not torch.allclose(fresh(states, reference), restored(states, reference))
