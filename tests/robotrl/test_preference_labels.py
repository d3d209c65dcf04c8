"""The preference loop's labels follow its label store: resumes (SURF too), `labels_from`, people's undo and
relabelling, several annotators, and the scale of a scripted teacher's skip/equal thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reward_learning.label_store import LabelStore
from robotrl.config import ConfigError, PreferenceConfig
from robotrl.core.buffers import ReplayBuffer
from robotrl.preference import LABEL_STORE, PreferenceLoop

EPISODE = 50
SETTINGS = dict(budget=40, queries_per_round=8, segment_length=10, query_every=100, unsup_steps=0, candidate_factor=2,
                diagnostic_pairs=0, starc_samples=0, model={"hidden_sizes": [8], "max_epochs": 2})
SURF = {"enabled": True, "unlabeled_ratio": 1}


def loop(run_dir: Path, **settings) -> PreferenceLoop:
    config = PreferenceConfig(**{**SETTINGS, **settings})
    return PreferenceLoop(config, env_id="X", obs_shape=(3,), action_dim=1, discrete_actions=False,
                          component_names=["a"], run_dir=run_dir, run_name="r", learning_starts=0, total_steps=1000,
                          max_episode_steps=EPISODE, gamma=0.99, device=torch.device("cpu"), seed=0)


def buffer(steps: int = 1000, component: float | None = None) -> ReplayBuffer:
    """Random 50-step episodes (cut by time limits); `component`: a constant reward component instead of noise."""
    buf = ReplayBuffer(steps, (3,), 1, 1)
    g = torch.Generator().manual_seed(0)
    for t in range(steps):
        episode, step = divmod(t, EPISODE)
        parts = torch.full((1, 1), component) if component is not None else torch.randn(1, 1, generator=g)
        buf.add(obs=torch.randn(1, 3, generator=g), action=torch.randn(1, 1, generator=g),
                next_obs=torch.randn(1, 3, generator=g), reward=torch.zeros(1), env_reward=torch.randn(1, generator=g),
                components=parts, terminated=torch.zeros(1), truncated=torch.tensor([step == EPISODE - 1]),
                episode_step=torch.tensor([step]), episode_id=torch.tensor([episode]))
    return buf


def test_surf_run_resumes_after_a_kill_between_store_and_checkpoint(tmp_path):
    data, run = buffer(), tmp_path / "run"
    first = loop(run, surf=SURF)
    first.run_round(100, data, 1, [1.0])
    checkpoint = first.state_dict()
    first.run_round(200, data, 1, [1.0])  # written to the store, then killed before the next checkpoint
    first.close()

    resumed = loop(run, surf=SURF)
    resumed.load_state_dict(checkpoint)
    assert resumed.resync_from_store() == 8
    assert resumed.learner.segment_length == 10 + 2 * 5  # the learner's wide segments, not the 10 steps shown
    for name in ("obs", "action", "absorbing"):  # the same pairs as the run that asked
        assert torch.equal(resumed.learner.left[name], first.learner.left[name]), name
    assert torch.equal(resumed.learner.target, first.learner.target)
    resumed.run_round(300, data, 1, [1.0])
    assert len(resumed.learner) == 24
    resumed.close()


def test_labels_from_a_surf_runs_store(tmp_path):
    data, store = buffer(), tmp_path / "surf" / LABEL_STORE
    surf_run = loop(tmp_path / "surf", surf=SURF)
    surf_run.run_round(100, data, 1, [1.0])
    surf_run.close()
    plain_run = loop(tmp_path / "plain")
    plain_run.run_round(100, data, 1, [1.0])
    plain_run.close()

    with_surf = loop(tmp_path / "a", surf=SURF, labels_from=str(store))
    assert len(with_surf.learner) == 8 and with_surf.learner.segment_length == 20
    with_surf.run_round(100, data, 1, [1.0])  # prior labels and the run's own ones train together
    assert len(with_surf.learner) == 16
    with_surf.close()
    without_surf = loop(tmp_path / "b", labels_from=str(store))  # the segments that were labelled
    assert len(without_surf.learner) == 8 and without_surf.learner.segment_length == 10
    without_surf.close()
    with pytest.raises(ConfigError, match="SURF .window 3. trains on wider segments"):
        loop(tmp_path / "c", surf={**SURF, "window": 3}, labels_from=str(store))
    with pytest.raises(ConfigError, match="does not hold the 5 steps on each side"):
        loop(tmp_path / "d", surf=SURF, labels_from=str(tmp_path / "plain" / LABEL_STORE))


def learner_labels(pref: PreferenceLoop) -> dict[int, float]:
    """Store label id -> training target (P(right preferred)) of every pair the learner holds."""
    return dict(zip(pref.label_ids.tolist(), pref.learner.target.tolist(), strict=True))


def test_people_undo_relabel_and_second_annotators_reach_the_learner(tmp_path):
    data, run = buffer(), tmp_path / "run"
    pref = loop(run, teacher="human", human_timeout=0.01)
    pref.run_round(100, data, 1, [])  # asks 8 queries; nobody answers in time
    people = LabelStore.open(run / LABEL_STORE)
    query = people.pending_queries()[0]
    first = people.add_label_once(query, "left", "web:alice")
    pref.run_round(200, data, 1, [])
    assert learner_labels(pref) == {first: 0.0}

    people.retract_last("web:alice")  # alice changes her mind after the model trained on her answer
    changed = people.add_label_once(query, "right", "web:alice")
    bob = people.add_label_once(query, "left", "web:bob")  # a second annotator, after the round
    pref.run_round(300, data, 1, [])
    assert learner_labels(pref) == {changed: 1.0, bob: 0.0}  # one label per annotator and query
    assert pref.counts["withdrawn"] == 1
    checkpoint = pref.state_dict()
    pref.close()

    people.retract_last("web:bob")  # while the run is down
    resumed = loop(run, teacher="human", human_timeout=0.01)
    resumed.load_state_dict(checkpoint)
    assert resumed.resync_from_store() == 0
    assert learner_labels(resumed) == {changed: 1.0}
    resumed.close()
    people.close()


def test_thresholds_follow_the_teachers_reward_scale(tmp_path):
    data = buffer(component=1.0)  # every step: component a = 1, env reward ~ N(0, 1)
    env_returns = [0.5] * 10
    weighted = loop(tmp_path / "weighted", teacher="equal", teacher_weights={"a": 100.0})
    weighted.run_round(100, data, 1, env_returns)
    # theta_equal = eps * |mean teacher return| * L / T = 0.1 * (100 * 50) * 10 / 50
    assert weighted.teacher.theta_equal == pytest.approx(100.0)
    weighted.close()
    plain = loop(tmp_path / "plain", teacher="equal")
    plain.run_round(100, data, 1, env_returns)
    assert plain.teacher.theta_equal == pytest.approx(0.1 * 0.5 * 10 / 50)  # the env returns the trainer reports
    plain.close()
