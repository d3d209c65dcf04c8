"""HERON inside a PEBBLE run: the `heron:` config section, its errors, tiny Pendulum runs whose labels (margins scaled
by each round's candidates, ties as configured) land in the label store, and the shipped HERON configs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from reward_learning.heron import HeronTeacher
from reward_learning.label_store import LabelStore
from reward_learning.segments import Label, Segments
from robotrl.config import ConfigError, load_config
from robotrl.preference import LABEL_STORE
from robotrl.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HERON_CONFIGS = sorted(CONFIGS.glob("*_heron.yaml"))
LEVELS = ["angle_squared", "angular_velocity_squared", "torque_squared"]
HERON_PREFERENCE = {"source": "preference", "preference": {
    "teacher": "heron", "heron": {"levels": LEVELS, "margins": 0.0},
    "budget": 20, "queries_per_round": 8, "segment_length": 10, "query_every": 100, "unsup_steps": 100,
    "candidate_factor": 3, "diagnostic_pairs": 16, "reset_updates": 5,
    "model": {"hidden_sizes": [16, 16], "max_epochs": 3, "inputs": "obs_action_components",
              "normalize_inputs": True}}}
MORE_LABELS = ("reward.preference.budget=60", "reward.preference.queries_per_round=20")  # enough pairs to see ties


def heron_config(tiny_config, overrides=()):
    return tiny_config("sac", overrides=overrides, reward=HERON_PREFERENCE, train={"total_steps": 500})


def train_recording_rounds(trainer: Trainer, monkeypatch
                           ) -> tuple[HeronTeacher, list[Segments], list[tuple[Segments, Segments]]]:
    """Train, recording per round the candidate pool the loop shows its teacher and the pairs it asks about; also
    returns an untouched copy of the teacher."""
    teacher = trainer.preference.teacher
    fresh = copy.deepcopy(teacher)
    pools, pairs = [], []
    observe, label = teacher.observe_candidates, teacher.label
    monkeypatch.setattr(teacher, "observe_candidates", lambda candidates: (pools.append(candidates),
                                                                          observe(candidates))[1])
    monkeypatch.setattr(teacher, "label", lambda left, right, rng: (pairs.append((left, right)),
                                                                    label(left, right, rng))[1])
    trainer.train()
    return fresh, pools, pairs


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


def test_heron_margins_in_a_run_are_scaled_by_each_rounds_candidate_pool(tiny_config, tmp_path, monkeypatch):
    config = heron_config(tiny_config, [*MORE_LABELS, "reward.preference.heron.margins=[1.5, 1.5, 1.5]"])
    trainer = Trainer(config, run_dir=tmp_path / "run", progress=False)
    fresh, pools, pairs = train_recording_rounds(trainer, monkeypatch)
    assert len(pools) == len(pairs) == 3
    assert [len(pool) for pool in pools] == [2 * 20, 2 * 20 * 3, 2 * 20 * 3]  # uniform first round, then 3 per query
    # the labels are those of a HERON teacher whose margins come from the same pool, round by round
    expected, unscaled = [], []
    for pool, (left, right) in zip(pools, pairs, strict=True):
        reference = copy.deepcopy(fresh)
        reference.observe_candidates(pool)
        expected.append(reference.label(left, right, np.random.default_rng(0)))
        unscaled.append(copy.deepcopy(fresh).label(left, right, np.random.default_rng(0)))
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        labels = store.labelled_pairs(include_skipped=True, labeller="teacher:heron").labels
    np.testing.assert_array_equal(labels, np.concatenate(expected))
    assert {Label.LEFT, Label.RIGHT, Label.SKIP} <= set(labels.tolist())  # margins leave some pairs undecided
    assert (labels != np.concatenate(unscaled)).any()  # margins from the queried pairs alone would label differently


@pytest.mark.parametrize("ties, tie, never", [("equal", Label.EQUAL, Label.SKIP), ("skip", Label.SKIP, Label.EQUAL)])
def test_per_transition_heron_runs_on_one_step_segments(tiny_config, tmp_path, ties, tie, never):
    config = heron_config(tiny_config, [*MORE_LABELS, "reward.preference.heron.per_transition=true",
                                        "reward.preference.segment_length=1", f"reward.preference.heron.ties={ties}",
                                        "reward.preference.heron.margins=[1.5, 1.5, 1.5]"])
    assert load_config(None, [], base=config.model_dump()).reward.preference.heron.per_transition
    Trainer(config, run_dir=tmp_path / "run", progress=False).train()
    with LabelStore.open(tmp_path / "run" / LABEL_STORE) as store:
        pairs = store.labelled_pairs(include_skipped=True)
    assert pairs.left.length == 1 and len(pairs.labels) == 60
    # transitions no level tells apart by more than one std are ties, labelled as configured; the rest are decided
    assert {Label.LEFT, Label.RIGHT, tie} <= set(pairs.labels.tolist())
    assert never not in pairs.labels


def shipped_teacher(path: Path) -> tuple[HeronTeacher, list[str]]:
    """The HERON teacher a shipped config builds on its env's reward components, and their names."""
    config = load_config(path)
    spec = envs.reward_spec(config.env.id)
    names = [c.name for c in spec]
    teacher = HeronTeacher.from_config(config.reward.preference.heron, component_names=names,
                                       spec_directions={c.name: c.direction for c in spec})
    return teacher, names


@pytest.mark.parametrize("path", HERON_CONFIGS, ids=[p.name for p in HERON_CONFIGS])
def test_shipped_heron_configs_rank_their_envs_components(path):
    teacher, names = shipped_teacher(path)
    assert {name for level in teacher.levels for name in level} <= set(names)


def test_ant_heron_prefers_moving_forward_to_saving_effort():
    # the paper's Ant ranks alive > joints at limit > progress > feet collisions and has no effort term: a segment
    # that walks forward with more effort beats one that stands still (both healthy, no contact)
    teacher, names = shipped_teacher(CONFIGS / "ant_heron.yaml")
    per_step = {"forward_velocity": [1.0, 0.0], "healthy": [1.0, 1.0], "control_cost": [4.0, 0.0],
                "contact_cost": [0.0, 0.0]}
    components = torch.tensor([per_step[name] for name in names], dtype=torch.float64).T[:, None, :].repeat(1, 5, 1)
    obs = torch.zeros(2, 5, 1)  # the teacher reads only the components
    segments = Segments(obs=obs, action=torch.zeros(2, 5, 1), next_obs=obs, env_reward=torch.zeros(2, 5),
                        components=components, episode=torch.arange(2), start=torch.zeros(2, dtype=torch.int64),
                        absorbing=torch.zeros(2, 5, dtype=torch.bool))
    assert teacher.label(segments[:1], segments[1:], np.random.default_rng(0)).tolist() == [Label.LEFT]
