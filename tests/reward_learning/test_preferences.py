"""RewardLearner: Bradley-Terry (partial return) and regret preference models, soft targets, label smoothing, SURF
crops and pseudo-labels, and resumable state. The synthetic task: the true per-step reward is obs[..., 0]."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reward_learning.models import RewardEnsemble, RewardModelConfig
from reward_learning.preferences import RewardLearner, SURFConfig
from reward_learning.segments import Label, Segments

OBS_DIM, L = 3, 10


def segs(q: int, length: int = L, seed: int = 0) -> Segments:
    """Slices of i.i.d. Gaussian observations with next_obs[t] = obs[t + 1]; the true reward is obs[..., 0]."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(q, length + 1, OBS_DIM, generator=g)
    return Segments(obs=obs[:, :-1], action=torch.rand(q, length, 1, generator=g) * 2 - 1, next_obs=obs[:, 1:],
                    env_reward=obs[:, :-1, 0].clone(), components=obs[:, :-1, :1].clone(),
                    episode=torch.arange(q), start=torch.zeros(q, dtype=torch.int64))


def oracle(left: Segments, right: Segments) -> np.ndarray:
    return (right.env_reward.sum(1) > left.env_reward.sum(1)).long().numpy()


def make(seed: int = 0, surf: SURFConfig | None = None, **kwargs) -> RewardLearner:
    cfg = {"ensemble_size": 3, "hidden_sizes": [32, 32], "lr": 3e-3, "batch_size": 64, "max_epochs": 60, **kwargs}
    torch.manual_seed(seed)
    return RewardLearner(RewardEnsemble((OBS_DIM,), 1, RewardModelConfig(**cfg)), surf=surf, seed=seed)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.detach().double().numpy(), b.double().numpy())[0, 1])


def weights(learner: RewardLearner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.model.parameters()]


# ------------------------------------------------------------------------------------------------ it learns
@pytest.mark.parametrize("preference_model", ["partial_return", "regret"])
def test_learns_synthetic_reward(preference_model):
    learner = make(preference_model=preference_model)
    left, right = segs(500, seed=1), segs(500, seed=2)
    assert learner.add_labels(left, right, oracle(left, right)) == 500
    stats = learner.train()
    assert set(stats) >= {"loss", "train_accuracy", "epochs", "pairs"} and stats["pairs"] == 500
    assert 1 <= stats["epochs"] <= 60
    test_l, test_r = segs(400, seed=3), segs(400, seed=4)
    accuracy = learner.accuracy(test_l, test_r, oracle(test_l, test_r))
    assert accuracy > 0.85, accuracy
    transitions = test_l.transitions()
    with torch.no_grad():
        learned = learner.model(transitions)
    assert pearson(learned, transitions["env_reward"]) > 0.8
    assert learner.rounds == 1


def test_untrained_model_is_near_chance():
    """The accuracy threshold above means something: an untrained ensemble does not pass it."""
    learner = make()
    test_l, test_r = segs(400, seed=3), segs(400, seed=4)
    assert learner.accuracy(test_l, test_r, oracle(test_l, test_r)) < 0.75


def test_regret_model_uses_its_potential():
    """Labels from regret scores sum r + V(s_end) - V(s_start) with V(s) = 4 s[1]: the regret learner explains them,
    a partial-return learner (no potential, and r sees only (s, a)) cannot."""
    def regret_labels(left: Segments, right: Segments) -> np.ndarray:
        def score(s: Segments) -> torch.Tensor:
            return s.env_reward.sum(1) + 4 * s.next_obs[:, -1, 1] - 4 * s.obs[:, 0, 1]
        return (score(right) > score(left)).long().numpy()

    left, right = segs(300, seed=5), segs(300, seed=6)
    test_l, test_r = segs(400, seed=7), segs(400, seed=8)
    accuracy = {}
    for model in ("regret", "partial_return"):
        learner = make(preference_model=model, target_accuracy=1.0, max_epochs=40)
        learner.add_labels(left, right, regret_labels(left, right))
        learner.train()
        accuracy[model] = learner.accuracy(test_l, test_r, regret_labels(test_l, test_r))
    assert accuracy["regret"] > 0.85, accuracy
    assert accuracy["regret"] > accuracy["partial_return"] + 0.1, accuracy


def test_regret_prob_right_includes_potential_difference():
    learner = make(preference_model="regret")
    left, right = segs(5, seed=1), segs(5, seed=2)
    m = learner.model
    with torch.no_grad():
        def score(s: Segments) -> torch.Tensor:
            r = m.member_rewards({"obs": s.obs, "action": s.action}).sum(-1)
            return r + m.potentials(s.next_obs[:, -1]) - m.potentials(s.obs[:, 0])
        expected = torch.sigmoid(score(right) - score(left))
    torch.testing.assert_close(learner.prob_right(left, right), expected)


def test_regret_and_surf_are_exclusive():
    with pytest.raises(ValueError, match="SURF"):
        make(preference_model="regret", surf=SURFConfig(enabled=True))


# -------------------------------------------------------------------------------------------------- labels
def test_equal_is_soft_target_and_skip_is_dropped():
    learner = make()
    left, right = segs(6, seed=1), segs(6, seed=2)
    labels = np.array([Label.LEFT, Label.SKIP, Label.EQUAL, Label.RIGHT, Label.SKIP, Label.EQUAL])
    assert learner.add_labels(left, right, labels) == 4
    assert len(learner) == 4
    torch.testing.assert_close(learner.target, torch.tensor([0.0, 0.5, 1.0, 0.5]))
    # the kept pairs are the right ones, in order
    torch.testing.assert_close(learner.left["obs"], left.obs[[0, 2, 3, 5]])
    torch.testing.assert_close(learner.right["action"], right.action[[0, 2, 3, 5]])
    # later additions append
    assert learner.add_labels(segs(2, seed=3), segs(2, seed=4), [1, 0]) == 2
    torch.testing.assert_close(learner.target, torch.tensor([0.0, 0.5, 1.0, 0.5, 1.0, 0.0]))
    assert learner.segment_length == L


def test_all_skips_keep_nothing_and_train_refuses():
    learner = make()
    assert learner.add_labels(segs(3), segs(3, seed=1), [Label.SKIP] * 3) == 0
    assert len(learner) == 0 and learner.segment_length is None
    with pytest.raises(ValueError, match="no labelled pairs"):
        learner.train()


def test_invalid_labels_and_count_mismatch_raise():
    learner = make()
    with pytest.raises(ValueError):
        learner.add_labels(segs(2), segs(2, seed=1), [0, 7])
    with pytest.raises(ValueError, match="do not match"):
        learner.add_labels(segs(2), segs(2, seed=1), [0, 1, 1])
    with pytest.raises(ValueError, match="do not match"):
        learner.add_labels(segs(2), segs(3, seed=1), [0, 1])
    assert len(learner) == 0


def test_segments_of_another_length_are_rejected():
    learner = make()
    learner.add_labels(segs(4), segs(4, seed=1), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="segment length"):
        learner.add_labels(segs(4, length=8, seed=2), segs(4, length=8, seed=3), [0, 1, 0, 1])
    assert len(learner) == 4


def test_equal_labels_pull_the_two_returns_together():
    """Trained only on EQUAL labels, the ensemble predicts ~0.5 on those pairs (soft-target cross-entropy)."""
    learner = make(target_accuracy=1.0, max_epochs=80, output="linear")
    left, right = segs(32, seed=1), segs(32, seed=2)
    learner.add_labels(left, right, [Label.EQUAL] * 32)
    stats = learner.train()
    assert stats["train_accuracy"] == 1.0  # nothing strict to count
    p = learner.prob_right(left, right)
    assert (p - 0.5).abs().max() < 0.1


def test_label_margin_bounds_the_loss_by_the_entropy_of_the_margin():
    """With targets m / 1-m, cross-entropy cannot go below H(m); without smoothing a separable set goes far below."""
    left, right = segs(64, seed=1), segs(64, seed=2)
    labels = oracle(left, right)
    entropy = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    losses, logits = {}, {}
    for margin in (0.0, 0.1):
        learner = make(label_margin=margin, output="linear", target_accuracy=1.0, max_epochs=150, ensemble_size=1)
        learner.add_labels(left, right, labels)
        losses[margin] = learner.train()["loss"]
        p = learner.prob_right(left, right)[0]
        logits[margin] = torch.logit(p.double()).abs()
    assert losses[0.1] >= entropy - 1e-4, losses
    assert losses[0.1] < entropy + 0.1, losses  # and it gets close to it: the targets are 0.1 / 0.9
    assert losses[0.0] < entropy - 0.15, losses
    # the smoothed optimum is |logit| = log(0.9 / 0.1); unsmoothed logits grow past it
    assert abs(float(logits[0.1].median()) - math.log(9)) < 0.7, logits[0.1].median()
    assert float(logits[0.0].median()) > float(logits[0.1].median()) + 0.5


def test_label_margin_leaves_equal_targets_at_half():
    """An EQUAL pair is already 0.5: its loss with smoothing is minimised at equal returns too."""
    learner = make(label_margin=0.2, target_accuracy=1.0, max_epochs=80, output="linear")
    left, right = segs(32, seed=1), segs(32, seed=2)
    learner.add_labels(left, right, [Label.EQUAL] * 32)
    learner.train()
    assert (learner.prob_right(left, right) - 0.5).abs().max() < 0.1


def test_members_get_their_own_shuffle():
    """Members start identical; with mini-batches smaller than the data set they diverge only through their shuffles."""
    learner = make(batch_size=16, max_epochs=3, target_accuracy=1.0)
    with torch.no_grad():
        for layer in learner.model.net.layers:
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
    left, right = segs(64, seed=1), segs(64, seed=2)
    probe = {"obs": left.obs, "action": left.action}
    members = learner.model.member_rewards(probe)
    assert torch.equal(members[0], members[1]) and torch.equal(members[1], members[2])
    learner.add_labels(left, right, oracle(left, right))
    learner.train()
    members = learner.model.member_rewards(probe)
    assert not torch.allclose(members[0], members[1]) and not torch.allclose(members[1], members[2])


def test_full_batch_members_stay_identical():
    """Control for the test above: with one batch per epoch the shuffle does not matter, so identical members stay
    identical (the divergence above is the shuffle, not something else per member)."""
    learner = make(batch_size=64, max_epochs=3, target_accuracy=1.0)
    with torch.no_grad():
        for layer in learner.model.net.layers:
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
    left, right = segs(64, seed=1), segs(64, seed=2)
    learner.add_labels(left, right, oracle(left, right))
    learner.train()
    members = learner.model.member_rewards({"obs": left.obs, "action": left.action})
    torch.testing.assert_close(members[0], members[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(members[1], members[2], rtol=1e-5, atol=1e-6)


def test_early_stop_at_target_accuracy():
    learner = make(target_accuracy=0.6, max_epochs=200)
    left, right = segs(128, seed=1), segs(128, seed=2)
    learner.add_labels(left, right, oracle(left, right))
    stats = learner.train()
    assert stats["train_accuracy"] > 0.6
    assert stats["epochs"] < 200


# ------------------------------------------------------------------------------------------- terminations
def terminating(q: int, seed: int, bias: float) -> Segments:
    """Half the slices end in a termination after 2..L real steps; true reward bias + 0.5 obs[0] on real steps and
    0 on absorbing steps (which repeat arbitrary values in the other fields)."""
    s = segs(q, seed=seed)
    g = torch.Generator().manual_seed(seed + 1000)
    real = torch.randint(2, L + 1, (q,), generator=g)
    real = torch.where(torch.rand(q, generator=g) < 0.5, torch.full_like(real, L), real)
    absorbing = torch.arange(L)[None] >= real[:, None]
    reward = (bias + 0.5 * s.obs[..., 0]).masked_fill(absorbing, 0.0)
    return Segments(obs=s.obs, action=s.action, next_obs=s.next_obs, env_reward=reward, components=s.components,
                    episode=s.episode, start=s.start, absorbing=absorbing)


@pytest.mark.parametrize("preference_model", ["partial_return", "regret"])
def test_absorbing_steps_contribute_nothing_to_scores(preference_model):
    learner = make(preference_model=preference_model)
    left, right = terminating(20, 1, 1.0), terminating(20, 2, 1.0)
    assert left.absorbing.any() and right.absorbing.any()
    p = learner.prob_right(left, right)
    # whatever the absorbing steps hold, the preference is the same
    noisy = Segments(**{**{k: getattr(left, k) for k in ("action", "env_reward", "components", "episode", "start",
                                                         "absorbing")},
                        "obs": torch.where(left.absorbing[..., None], 50.0, left.obs),
                        "next_obs": torch.where(left.absorbing[..., None], -50.0, left.next_obs)})
    torch.testing.assert_close(learner.prob_right(noisy, right), p)
    # and it is the sum over real steps (plus V(start) and, unless terminal, V(end) for regret)
    m = learner.model
    with torch.no_grad():
        def score(s: Segments) -> torch.Tensor:
            r = m.member_rewards({"obs": s.obs, "action": s.action}) * (~s.absorbing).float()
            total = r.sum(-1)
            if preference_model == "regret":
                total = total + m.potentials(s.next_obs[:, -1]) * (~s.absorbing[:, -1]).float() - m.potentials(
                    s.obs[:, 0])
            return total
        torch.testing.assert_close(p, torch.sigmoid(score(right) - score(left)))


@pytest.mark.parametrize("preference_model", ["partial_return", "regret"])
@pytest.mark.parametrize("bias", [1.0, -1.0])
def test_learns_whether_living_beats_terminating(preference_model, bias):
    """Preferences fix rewards only up to a constant, except relative to termination: with a positive per-step
    reward the teacher prefers segments that keep going, and the learned reward must be above the absorbing
    state's 0 (agents treat termination as worth 0); with a negative one, below it."""
    learner = make(preference_model=preference_model)
    left, right = terminating(500, 1, bias), terminating(500, 2, bias)
    learner.add_labels(left, right, oracle(left, right))
    learner.train()
    test_l, test_r = terminating(400, 3, bias), terminating(400, 4, bias)
    assert learner.accuracy(test_l, test_r, oracle(test_l, test_r)) > 0.85
    with torch.no_grad():
        rewards = learner.model(segs(400, seed=5).transitions())
    share_positive = float((rewards > 0).float().mean())
    assert share_positive > 0.8 if bias > 0 else share_positive < 0.2, share_positive


# ---------------------------------------------------------------------------------------- prob_right / accuracy
def test_prob_right_shape_and_bradley_terry():
    learner = make()
    left, right = segs(7, seed=1), segs(7, seed=2)
    p = learner.prob_right(left, right)
    assert p.shape == (3, 7)
    assert ((p > 0) & (p < 1)).all()
    m = learner.model
    with torch.no_grad():
        sums = [m.member_rewards({"obs": s.obs, "action": s.action}).sum(-1) for s in (left, right)]
    torch.testing.assert_close(p, torch.sigmoid(sums[1] - sums[0]))
    torch.testing.assert_close(learner.prob_right(right, left), 1 - p)
    # chunking does not change the answer
    torch.testing.assert_close(learner.prob_right(left, right, chunk=3), p)


def test_accuracy_ignores_equal_and_skip_and_is_nan_without_strict_labels():
    learner = make()
    left, right = segs(50, seed=1), segs(50, seed=2)
    labels = oracle(left, right)
    learner.add_labels(left, right, labels)
    learner.train()
    base = learner.accuracy(left, right, labels)
    mixed = np.concatenate([labels, [Label.EQUAL] * 10, [Label.SKIP] * 5])
    more_l, more_r = segs(15, seed=3), segs(15, seed=4)
    assert learner.accuracy(Segments.concat([left, more_l]), Segments.concat([right, more_r]), mixed) == base
    # computed from the ensemble-mean preference
    p = learner.prob_right(left, right).mean(0).numpy()
    assert base == pytest.approx(np.mean((p > 0.5) == (labels == 1)))
    assert math.isnan(learner.accuracy(left[:4], right[:4], np.array([Label.EQUAL, Label.SKIP, 2, 3])))
    # and the sign is right: flipping every label flips the accuracy
    assert learner.accuracy(left, right, 1 - labels) == pytest.approx(1 - base)


# -------------------------------------------------------------------------------------------------- state
def test_state_dict_round_trip_continues_identically(tmp_path):
    learner = make(max_epochs=5, target_accuracy=1.0)
    left, right = segs(100, seed=1), segs(100, seed=2)
    learner.add_labels(left, right, oracle(left, right))
    learner.add_unlabelled(segs(10, seed=3), segs(10, seed=4))
    learner.train()
    path = tmp_path / "learner.pt"
    torch.save({"model": learner.model.state_dict(), "learner": learner.state_dict()}, path)
    saved = torch.load(path, weights_only=False)

    fresh = make(seed=123, max_epochs=5, target_accuracy=1.0)
    fresh.model.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["learner"])
    assert len(fresh) == 100 and fresh.rounds == 1
    torch.testing.assert_close(fresh.target, learner.target)

    more_l, more_r = segs(20, seed=5), segs(20, seed=6)
    for each in (learner, fresh):
        each.add_labels(more_l, more_r, oracle(more_l, more_r))
        each.train()
    for a, b in zip(weights(learner), weights(fresh), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fresh.rounds == learner.rounds == 2


def test_state_dict_without_optimizer_state_would_differ():
    """Control for the round trip: a fresh learner with the same weights but its own optimiser/RNG diverges."""
    learner = make(max_epochs=5, target_accuracy=1.0)
    left, right = segs(100, seed=1), segs(100, seed=2)
    learner.add_labels(left, right, oracle(left, right))
    learner.train()
    fresh = make(seed=123, max_epochs=5, target_accuracy=1.0)
    fresh.model.load_state_dict(learner.model.state_dict())
    fresh.add_labels(left, right, oracle(left, right))
    learner.train()
    fresh.train()
    assert any(not torch.equal(a, b) for a, b in zip(weights(learner), weights(fresh), strict=True))


# --------------------------------------------------------------------------------------------------- SURF
W, C = 3, 2
SURF = SURFConfig(enabled=True, window=W, crop_range=C, unlabeled_ratio=2, threshold=0.95)


def surf_pairs(q: int, seed: int) -> tuple[Segments, Segments, np.ndarray]:
    """Stored segments of L + 2w; the teacher sees (and labels) the central L steps."""
    left, right = segs(q, L + 2 * W, seed), segs(q, L + 2 * W, seed + 100)
    return left, right, oracle(left.crop(W, L), right.crop(W, L))


def test_surf_learns_from_cropped_segments():
    learner = make(surf=SURF)
    left, right, labels = surf_pairs(500, 1)
    learner.add_labels(left, right, labels)
    learner.add_unlabelled(segs(600, L + 2 * W, 2), segs(600, L + 2 * W, 3))
    assert learner.segment_length == L + 2 * W
    stats = learner.train()
    assert stats["pairs"] == 500
    test_l, test_r = segs(400, seed=3), segs(400, seed=4)
    assert learner.accuracy(test_l, test_r, oracle(test_l, test_r)) > 0.85
    transitions = test_l.transitions()
    with torch.no_grad():
        assert pearson(learner.model(transitions), transitions["env_reward"]) > 0.8


@pytest.mark.parametrize("window,crop_range", [(3, 2), (5, 5), (2, 20), (0, 0)])
def test_crop_mask_lengths_and_windows(window, crop_range):
    learner = make(surf=SURFConfig(enabled=True, window=window, crop_range=crop_range))
    stored = L + 2 * window
    mask = learner._crop_mask(3, 400, stored)
    assert mask.shape == (3, 400, stored)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    lengths = mask.sum(-1)
    lo, hi = max(1, L - crop_range), min(stored, L + crop_range)
    assert int(lengths.min()) == lo and int(lengths.max()) == hi  # 1200 draws hit both ends of the range
    # each mask is one contiguous window inside the stored segment
    edges = (mask[..., 1:] - mask[..., :-1]).abs().sum(-1) + mask[..., 0] + mask[..., -1]
    assert (edges == 2).all()
    # the windows are not all anchored at the same place
    first = mask.argmax(-1)
    assert first.unique().numel() > 1 or hi == stored


def test_crop_masks_cover_every_start():
    learner = make(surf=SURFConfig(enabled=True, window=3, crop_range=0))
    mask = learner._crop_mask(1, 2000, L + 6)  # fixed length L: start offsets 0..6
    starts = mask.argmax(-1)
    assert set(starts.unique().tolist()) == set(range(7))


def pseudo_loss(threshold: float, weight: float = 1.0, trained: bool = True) -> torch.Tensor:
    learner = make(surf=SURFConfig(enabled=True, window=W, crop_range=C, threshold=threshold, weight=weight),
                   output="linear", max_epochs=20, target_accuracy=1.0)
    if trained:
        left, right, labels = surf_pairs(200, 1)
        learner.add_labels(left, right, labels)
        learner.train()
    learner.add_unlabelled(segs(300, L + 2 * W, 5), segs(300, L + 2 * W, 6))
    learner.generator.manual_seed(99)
    with torch.no_grad():
        return learner._pseudo_label_loss(300, L + 2 * W)


def test_pseudo_labels_only_confident_pairs_contribute():
    strict_loss, loose_loss = pseudo_loss(0.999), pseudo_loss(0.51)
    assert loose_loss > strict_loss >= 0
    # an untrained ensemble is confident about (almost) nothing at a high threshold
    assert float(pseudo_loss(0.999, trained=False)) == 0.0
    assert float(pseudo_loss(0.51, trained=False)) > 0.0
    # lambda_u scales the loss
    torch.testing.assert_close(pseudo_loss(0.51, weight=2.5), 2.5 * loose_loss)


def test_pseudo_label_loss_is_zero_when_predictions_are_confident_and_crops_agree():
    """With crop_range 0 and window 0 the crop is the central window itself: a confident pseudo-label is the model's own
    argmax, so the loss is the (small) entropy of confident predictions only."""
    learner = make(surf=SURFConfig(enabled=True, window=0, crop_range=0, threshold=0.51), output="linear",
                   max_epochs=30, target_accuracy=1.0)
    left, right = segs(200, seed=1), segs(200, seed=2)
    learner.add_labels(left, right, oracle(left, right))
    learner.train()
    u_l, u_r = segs(300, seed=5), segs(300, seed=6)
    learner.add_unlabelled(u_l, u_r)
    with torch.no_grad():
        loss = learner._pseudo_label_loss(300, L)
        p = learner.prob_right(u_l, u_r)
    confident_ce = -torch.log(torch.maximum(p, 1 - p)).mean(1).sum()  # upper bound: all pairs, all members
    assert 0 < float(loss) <= float(confident_ce) + 1e-4


def test_unlabelled_segments_of_another_length_are_rejected():
    learner = make(surf=SURF)
    left, right, labels = surf_pairs(20, 1)
    learner.add_labels(left, right, labels)
    with pytest.raises(ValueError, match="segment"):
        learner.add_unlabelled(segs(20, L, 2), segs(20, L, 3))  # central length instead of L + 2w
        learner.train()
