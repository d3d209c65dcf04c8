"""Preference-based reward learning inside training runs: PEBBLE phases, budget, label store, resume, PrefPPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.comparison_sampled import compare_rewards
from reward_learning.label_store import LabelStore
from reward_learning.models import RewardEnsemble
from reward_learning.segments import Label
from robotrl.config import ConfigError, load_config
from robotrl.preference import LABEL_STORE, REWARD_MODEL, PreferenceLoop
from robotrl.trainer import Trainer

PREFERENCE = {"source": "preference", "preference": {
    "budget": 20, "queries_per_round": 8, "segment_length": 10, "query_every": 100, "unsup_steps": 100,
    "candidate_factor": 3, "diagnostic_pairs": 16, "reset_updates": 5,
    "model": {"hidden_sizes": [16, 16], "max_epochs": 3}}}


def pebble_config(tiny_config, overrides=(), **sections):
    return tiny_config("sac", overrides=overrides, reward=PREFERENCE, train={"total_steps": 600}, **sections)


def metrics_of(run_dir):
    from robotrl.logger import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def test_pebble_phases_budget_store_relabel_and_critic_reset(tiny_config, tmp_path, monkeypatch):
    config = pebble_config(tiny_config)
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    pref = trainer.preference
    calls = {"reset": 0, "intrinsic_steps": [], "rounds": []}
    reset = trainer.agent.reset_critic
    monkeypatch.setattr(trainer.agent, "reset_critic", lambda: (calls.__setitem__("reset", calls["reset"] + 1),
                                                                 reset())[1])
    intrinsic = pref.intrinsic_rewards
    monkeypatch.setattr(pref, "intrinsic_rewards",
                        lambda *a: (calls["intrinsic_steps"].append(trainer.step), intrinsic(*a))[1])
    run_round = pref.run_round
    monkeypatch.setattr(pref, "run_round",
                        lambda step, *a, **k: (calls["rounds"].append(step), run_round(step, *a, **k))[1])
    trainer.train()

    # phases: random until 100, state entropy in [100, 200), then rounds every 100 steps until the budget is spent
    assert calls["intrinsic_steps"] and min(calls["intrinsic_steps"]) >= 100 and max(calls["intrinsic_steps"]) < 200
    assert calls["rounds"] == [200, 300, 400]  # 8 + 8 + 4 = 20 queries: the budget, exactly
    assert calls["reset"] == 1
    assert pref.budget.spent == 20
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        counts = store.counts()
    assert counts["queries"] == 20 and counts["labels"] == 20 and counts["pending"] == 0
    # the whole replay buffer carries the final learned reward (relabelled, then filled by the same model)
    buffer = trainer.buffer
    stored = {k: v[: len(buffer)] for k, v in buffer.storage.items()}
    with torch.no_grad():
        expected = pref.model({k: stored[k] for k in pref.model.fields})
    torch.testing.assert_close(stored["reward"], expected)
    assert not torch.allclose(stored["reward"], stored["env_reward"])
    records = metrics_of(tmp_path / "run")
    logged = {k for r in records for k in r}
    for key in ("reward/true_pref_accuracy", "reward/return_correlation", "reward/train_accuracy",
                "time/reward_learning_s", "time/relabel_s", "reward/queries"):
        assert key in logged, key
    loaded = RewardEnsemble.load(tmp_path / "run" / REWARD_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(loaded({k: stored[k] for k in loaded.fields}), expected)


def test_skip_and_equal_labels_are_stored_and_treated_right(tiny_config, tmp_path):
    config = pebble_config(tiny_config, ["reward.preference.teacher_options={eps_skip: 0.9, eps_equal: 0.5}",
                                         "reward.preference.budget=24"])
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        counts = store.counts()
        everything = store.labelled_pairs(include_skipped=True)
    assert counts["labels"] == 24
    assert counts["skip"] > 0 and counts["equal"] > 0
    learner = trainer.preference.learner
    assert len(learner) == 24 - counts["skip"]  # skips are never trained on
    assert int((learner.target == 0.5).sum()) == counts["equal"]  # equal -> soft target 0.5
    assert (everything.labels == Label.SKIP).sum() == counts["skip"]


def test_resume_continues_with_labels_and_reward_model(tiny_config, tmp_path):
    run = tmp_path / "run"
    first = Trainer(pebble_config(tiny_config, ["train.total_steps=300"]), run_dir=run, progress=False)
    first.train()
    weights = {k: v.clone() for k, v in first.preference.model.state_dict().items()}
    pairs = len(first.preference.learner)
    resumed = Trainer.resume(run, progress=False, overrides=("train.total_steps=600",))
    for key, value in resumed.preference.model.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    assert len(resumed.preference.learner) == pairs == 16
    assert resumed.preference.budget.spent == 16
    resumed.train()
    with LabelStore.open(run / LABEL_STORE) as store:
        assert store.counts()["queries"] == 20  # no query asked twice, budget respected across the resume
    assert resumed.preference.rounds == 3


def test_resume_recovers_labels_written_after_the_last_checkpoint(tiny_config, tmp_path):
    """A kill between the label store write and the checkpoint loses nothing: the store is the source of truth."""
    run = tmp_path / "run"
    trainer = Trainer(pebble_config(tiny_config, ["train.total_steps=300"]), run_dir=run, progress=False)
    trainer.train()
    pref = trainer.preference
    with LabelStore.open(run / LABEL_STORE) as store:
        before = store.labelled_pairs()
        extra_left = store.add_segments(before.left[:3], "later")
        extra_right = store.add_segments(before.right[:3], "later")
        queries = store.add_queries(extra_left, extra_right, round=9, sampler="uniform")
        store.add_labels(queries, ["left", "right", "equal"], labeller="teacher:oracle")
    resumed = Trainer.resume(run, progress=False)
    assert len(resumed.preference.learner) == len(pref.learner) + 3
    assert resumed.preference.budget.spent == pref.budget.spent + 3


def test_labels_from_another_store_train_the_model_first(tiny_config, tmp_path):
    source = tmp_path / "first"
    Trainer(pebble_config(tiny_config, ["train.total_steps=300"]), run_dir=source, progress=False).train()
    config = pebble_config(tiny_config, [f"reward.preference.labels_from={source / LABEL_STORE}"])
    trainer = Trainer(config, run_dir=tmp_path / "second", progress=False)
    assert len(trainer.preference.learner) == 16  # the earlier run's labels, before any round
    assert trainer.preference.budget.spent == 0  # they do not use this run's budget


def test_labels_from_another_task_fails_clearly(tiny_config, tmp_path):
    store_path = tmp_path / "cartpole.sqlite"
    LabelStore(store_path, env_id="CartPole-v1", obs_shape=(4,), action_dim=1,
               component_names=["upright", "fallen"]).close()
    config = pebble_config(tiny_config, [f"reward.preference.labels_from={store_path}"])
    with pytest.raises(ConfigError, match="CartPole-v1"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="no label store"):
        Trainer(pebble_config(tiny_config, [f"reward.preference.labels_from={tmp_path / 'none.sqlite'}"]),
                run_dir=tmp_path / "run2", progress=False)


def test_bad_preference_settings_are_config_errors(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        Trainer(pebble_config(tiny_config, ["reward.preference.teacher=orcale"]), run_dir=tmp_path / "a",
                progress=False)
    with pytest.raises(ConfigError, match="segment_length"):
        Trainer(pebble_config(tiny_config, ["reward.preference.segment_length=500"]), run_dir=tmp_path / "b",
                progress=False)
    with pytest.raises(ConfigError, match="sampler"):
        load_config(None, ["reward.preference.sampler=random"], base=pebble_config(tiny_config).model_dump())


def test_segments_may_run_past_a_termination(tiny_config, tmp_path):
    """CartPole falls within ~20 random steps: 30-step segments must include absorbing steps worth 0."""
    config = tiny_config("ppo", reward={"source": "preference", "preference": {
        "budget": 12, "queries_per_round": 6, "segment_length": 30, "query_every": 128, "unsup_steps": 0,
        "sampler": "uniform", "diagnostic_pairs": 0, "model": {"hidden_sizes": [16], "max_epochs": 2}}},
        train={"total_steps": 320})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    pref = trainer.preference
    assert pref.rounds == 2 and pref.budget.spent == 12
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        pairs = store.labelled_pairs(include_skipped=True)
    absorbing = torch.cat([pairs.left.absorbing, pairs.right.absorbing])
    assert absorbing.any()
    # absorbing steps are a suffix, and the teacher values them at 0
    first_absorbing = absorbing.float().argmax(1)
    rows = absorbing.any(1)
    steps = torch.arange(absorbing.shape[1])
    assert torch.equal(absorbing[rows], steps[None, :] >= first_absorbing[rows, None])
    true = pref.teacher.step_rewards(pairs.left)
    assert np.all(true[pairs.left.absorbing.numpy()] == 0.0)
    # and the model gives them exactly 0 in the preference scores: changing their inputs changes nothing
    before = pref.learner.prob_right(pairs.left, pairs.right)
    moved = pairs.left[:]
    moved.obs = torch.where(moved.absorbing[..., None], moved.obs + 100.0, moved.obs)
    moved.action = torch.where(moved.absorbing[..., None], 1 - moved.action, moved.action)
    torch.testing.assert_close(pref.learner.prob_right(moved, pairs.right), before)
    real_moved = pairs.left[:]
    real_moved.obs = torch.where(~real_moved.absorbing[..., None], real_moved.obs + 1.0, real_moved.obs)
    assert not torch.allclose(pref.learner.prob_right(real_moved, pairs.right), before)


def test_preference_loop_rejects_segments_longer_than_episodes(tmp_path):
    from robotrl.config import PreferenceConfig

    with pytest.raises(ConfigError, match="longer than an episode"):
        PreferenceLoop(PreferenceConfig(segment_length=300), env_id="Pendulum-v1", obs_shape=(3,), action_dim=1,
                       discrete_actions=False, component_names=["a"], run_dir=tmp_path, run_name="r",
                       learning_starts=0, total_steps=10, max_episode_steps=200, gamma=0.99,
                       device=torch.device("cpu"), seed=0)


def test_rounds_log_the_starc_distance_of_learned_from_true_reward(tiny_config, tmp_path, monkeypatch):
    from reward_learning.sources import EnvReward
    from robotrl import preference

    compared = []

    def spy(*args, **kwargs):
        result = compare_rewards(*args, **kwargs)
        compared.append((kwargs.get("gamma"), float(result.distances[0, 1])))
        return result

    monkeypatch.setattr(preference, "compare_rewards", spy)
    config = pebble_config(tiny_config, ["train.total_steps=1300", "reward.preference.starc_samples=1000",
                                         "algo.gamma=0.9"])
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    logged = [r["reward/starc_distance"] for r in metrics_of(tmp_path / "run") if "reward/starc_distance" in r]
    assert logged and all(0.0 <= d <= 1.0 for d in logged)
    # STARC-VAL depends on the discount: the logged distances are computed with the agent's gamma, not 0.99
    assert logged == pytest.approx([distance for _, distance in compared])
    assert {gamma for gamma, _ in compared} == {0.9}
    pref = trainer.preference

    class Negated:
        def __call__(self, batch):
            return -batch["env_reward"]

    pref.reward_source = EnvReward()  # the true reward itself: distance 0
    assert pref.starc_distance(trainer.buffer, 1000) == pytest.approx(0.0, abs=1e-6)
    pref.reward_source = Negated()  # the opposite ordering of policies: distance 1
    assert pref.starc_distance(trainer.buffer, 1000) == pytest.approx(1.0, abs=1e-6)


def test_prefppo_rewards_and_segments_see_the_actions_the_env_carried_out(tiny_config, tmp_path):
    """A wide Gaussian policy samples actions far outside [-1, 1]; the env clips them, and the segments people and
    teachers judge (and the reward model reads) must hold those clipped actions, not the raw samples."""
    config = tiny_config("ppo", env_id="Pendulum-v1", algo={"log_std_init": 1.5}, reward={
        "source": "preference", "preference": {
            "budget": 6, "queries_per_round": 6, "segment_length": 20, "query_every": 128, "unsup_steps": 0,
            "sampler": "uniform", "diagnostic_pairs": 0, "model": {"hidden_sizes": [16], "max_epochs": 2}}},
        train={"total_steps": 192})
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    stored = trainer.buffer.storage["action"][: len(trainer.buffer)]
    assert stored.abs().max() <= 1.0 and (stored.abs() == 1.0).float().mean() > 0.2  # many samples were clipped
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        pairs = store.labelled_pairs(include_skipped=True)
    assert torch.cat([pairs.left.action, pairs.right.action]).abs().max() <= 1.0
