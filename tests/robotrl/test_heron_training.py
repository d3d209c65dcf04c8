"""HERON inside a PEBBLE run: the `heron:` config section, its errors, and a tiny Pendulum run whose labels land in
the label store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_learning.heron import HeronTeacher
from reward_learning.label_store import LabelStore
from reward_learning.segments import Label
from robotrl.config import ConfigError, load_config
from robotrl.preference import LABEL_STORE
from robotrl.trainer import Trainer

LEVELS = ["angle_squared", "angular_velocity_squared", "torque_squared"]
HERON_PREFERENCE = {"source": "preference", "preference": {
    "teacher": "heron", "heron": {"levels": LEVELS, "margins": 0.0},
    "budget": 20, "queries_per_round": 8, "segment_length": 10, "query_every": 100, "unsup_steps": 100,
    "candidate_factor": 3, "diagnostic_pairs": 16, "reset_updates": 5,
    "model": {"hidden_sizes": [16, 16], "max_epochs": 3, "inputs": "obs_action_components",
              "normalize_inputs": True}}}


def heron_config(tiny_config, overrides=()):
    return tiny_config("sac", overrides=overrides, reward=HERON_PREFERENCE, train={"total_steps": 500})


def test_pebble_with_heron_labels_stores_them_and_learns_from_components(tiny_config, tmp_path):
    trainer = Trainer(heron_config(tiny_config), run_dir=tmp_path / "run", progress=False)
    assert isinstance(trainer.preference.teacher, HeronTeacher)
    assert trainer.preference.teacher.directions == dict.fromkeys(LEVELS, "minimize")  # from the env's reward spec
    trainer.train()
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        pairs = store.labelled_pairs(include_skipped=True, labeller="teacher:heron")
    assert len(pairs.labels) == 20
    # no margins: the first factor that differs decides, and each is minimised (Pendulum: the angle, nearly always)
    left, right = pairs.left.components.double().sum(1), pairs.right.components.double().sum(1)
    differs = (left != right).double()
    first = differs.argmax(1)
    rows = torch.arange(len(first))
    expected = np.where((left[rows, first] < right[rows, first]).numpy(), Label.LEFT, Label.RIGHT)
    np.testing.assert_array_equal(pairs.labels, expected)
    assert set(pairs.labels.tolist()) == {Label.LEFT, Label.RIGHT}
    # the reward model reads the stored components when the replay buffer is relabelled
    pref, buffer = trainer.preference, trainer.buffer
    assert pref.model.fields == ("obs", "action", "components")
    stored = {k: v[: len(buffer)] for k, v in buffer.storage.items()}
    with torch.no_grad():
        torch.testing.assert_close(stored["reward"], pref.model({k: stored[k] for k in pref.model.fields}))


def test_heron_config_errors_name_the_problem(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="teacher: heron needs a heron: section"):
        heron_config(tiny_config, ["reward.preference.heron=null"])
    with pytest.raises(ConfigError, match="only used with teacher: heron"):
        heron_config(tiny_config, ["reward.preference.teacher=oracle"])
    with pytest.raises(ConfigError, match="teacher_options are B-Pref knobs"):
        heron_config(tiny_config, ["reward.preference.teacher_options={eps_skip: 0.1}"])
    with pytest.raises(ConfigError, match="set segment_length: 1"):
        heron_config(tiny_config, ["reward.preference.heron.per_transition=true"])
    with pytest.raises(ConfigError, match=r"reward.preference.heron: .*margins has 2 values for 3 levels"):
        heron_config(tiny_config, ["reward.preference.heron.margins=[1, 1]"])
    with pytest.raises(ConfigError, match=r"heron.tie: unknown key \(did you mean ties\?\)"):
        heron_config(tiny_config, ["reward.preference.heron.tie=equal"])
    with pytest.raises(ConfigError, match=r"unknown reward component\(s\) \['angle'\]; this env declares "
                       r"\['angle_squared', 'angular_velocity_squared', 'torque_squared'\]"):
        Trainer(heron_config(tiny_config, ["reward.preference.heron.levels=[angle, torque_squared]"]),
                run_dir=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match=r"heron.directions: unknown reward component\(s\) \['speed'\]"):
        Trainer(heron_config(tiny_config, ["reward.preference.heron.directions={speed: maximize}"]),
                run_dir=tmp_path / "b", progress=False)


def test_per_transition_heron_runs_on_one_step_segments(tiny_config, tmp_path):
    config = heron_config(tiny_config, ["reward.preference.heron.per_transition=true",
                                        "reward.preference.segment_length=1", "reward.preference.heron.ties=equal",
                                        "reward.preference.heron.margins=[1.0, 1.0, 0.0]"])
    assert load_config(None, [], base=config.model_dump()).reward.preference.heron.per_transition
    Trainer(config, run_dir=tmp_path / "run", progress=False).train()
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        pairs = store.labelled_pairs(include_skipped=True)
    assert pairs.left.length == 1 and len(pairs.labels) == 20
    assert not (pairs.labels == Label.SKIP).any()
