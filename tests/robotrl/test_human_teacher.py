"""`teacher: human`: a run stores its queries with simulator states, waits for people (never forever), trains on
what arrived (late answers too) and stays on the state-entropy reward until the first label comes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import envs
from reward_learning.label_store import LabelStore
from robotrl.preference import LABEL_STORE
from robotrl.trainer import Trainer

HUMAN = {"source": "preference", "preference": {
    "teacher": "human", "human_timeout": 20.0, "budget": 12, "queries_per_round": 6, "segment_length": 10,
    "query_every": 100, "unsup_steps": 100, "candidate_factor": 2, "diagnostic_pairs": 0, "reset_updates": 2,
    "task_description": "keep the pendulum upright", "model": {"hidden_sizes": [16, 16], "max_epochs": 3}}}


def human_config(tiny_config, **preference):
    reward = {"source": "preference", "preference": {**HUMAN["preference"], **preference}}
    return tiny_config("sac", reward=reward, train={"total_steps": 400})


class Person(threading.Thread):
    """Answers every pending query in the run's store like a careful person would (by the true return)."""

    def __init__(self, path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.answered: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.path.exists():
                with LabelStore.open(self.path) as store:
                    for query in store.pending_queries("web:ann"):
                        pair = store.segments(list(store.query_segments([query])[0]))
                        label = "left" if float(pair.env_reward[0].sum()) > float(pair.env_reward[1].sum()) else "right"
                        store.add_label_once(query, label, "web:ann")
                        self.answered.append(query)
            time.sleep(0.05)


def test_run_waits_for_people_and_trains_on_their_labels(tiny_config, tmp_path):
    trainer = Trainer(human_config(tiny_config), run_dir=tmp_path / "run", progress=False)
    person = Person(tmp_path / "run" / LABEL_STORE)
    person.start()
    started = time.monotonic()
    trainer.train()
    person.done.set()
    assert time.monotonic() - started < 30  # every round was answered well before the 20 s timeout
    pref = trainer.preference
    assert pref.rounds == 2 and pref.has_reward and len(pref.learner) == 12
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        counts = store.counts()
        assert counts["queries"] == 12 and counts["pending"] == 0 and counts["labeller/web:ann"] == 12
        assert store.meta["task_description"] == "keep the pendulum upright"
        # segments carry simulator states that re-render the stored observations exactly
        seg = store.query_info(1).left_segment
        states = store.segment_states(seg)
        stored = store.segments([seg])
    env = envs.make("Pendulum-v1")
    env.reset(seed=0)
    for state, next_obs in zip(states, stored.next_obs[0].numpy(), strict=True):
        envs.set_state(env, state)
        theta, speed = env.unwrapped.state
        np.testing.assert_allclose([np.cos(theta), np.sin(theta), speed], next_obs, atol=1e-5)


def test_nobody_answers_the_run_times_out_and_stays_on_state_entropy(tiny_config, tmp_path, monkeypatch):
    from robotrl.progress import TrainingProgress

    trainer = Trainer(human_config(tiny_config, human_timeout=0.6), run_dir=tmp_path / "run", progress=False)
    shown: list[str | None] = []
    monkeypatch.setattr(TrainingProgress, "status", lambda self, text: shown.append(text))
    started = time.monotonic()
    trainer.train()
    assert time.monotonic() - started < 15
    pref = trainer.preference
    assert pref.rounds == 2 and not pref.has_reward and pref.unsupervised(trainer.step)
    assert any(text and text.startswith("waiting for labels: 0/6 answered") for text in shown)
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        assert store.counts()["pending"] == 12


def test_late_answers_are_picked_up_by_the_next_round(tiny_config, tmp_path, monkeypatch):
    trainer = Trainer(human_config(tiny_config, human_timeout=0.5), run_dir=tmp_path / "run", progress=False)
    pref = trainer.preference
    run_round = pref.run_round

    def round_with_a_late_person(step, *args, **kwargs):
        if pref.rounds == 1:  # round 1 timed out unanswered; someone answers 3 of its queries now
            assert not pref.has_reward
            with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
                for query in store.pending_queries()[:3]:
                    store.add_label_once(query, "left", "web:late")
        return run_round(step, *args, **kwargs)

    monkeypatch.setattr(pref, "run_round", round_with_a_late_person)
    trainer.train()
    assert pref.rounds == 2 and len(pref.learner) == 3 and pref.has_reward
    buffer = trainer.buffer
    stored = {k: v[: len(buffer)] for k, v in buffer.storage.items()}
    with torch.no_grad():  # the late labels trained the model and the whole buffer was relabelled with it
        torch.testing.assert_close(stored["reward"], pref.model({k: stored[k] for k in pref.model.fields}))


def test_human_teacher_with_surf_is_a_config_error(tiny_config, tmp_path):
    from robotrl.config import ConfigError

    config = human_config(tiny_config, surf={"enabled": True})
    with pytest.raises(ConfigError, match="surf off for teacher human"):
        Trainer(config, run_dir=tmp_path / "run", progress=False)
