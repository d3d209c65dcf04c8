"""Scripted B-Pref teachers, presets and the label budget, on small hand-made segments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reward_learning.segments import Label, Segments
from reward_learning.teachers import TEACHER_PRESETS, LabelBudget, ScriptedTeacher, Teacher, make_teacher

L, R, E, S = Label.LEFT, Label.RIGHT, Label.EQUAL, Label.SKIP


def segs(rewards, components=None) -> Segments:
    """Segments whose env reward is `rewards` [q, L]; components default to the reward as one component."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    q, length = rewards.shape
    obs = torch.zeros(q, length, 2)
    return Segments(
        obs=obs, action=torch.zeros(q, length, 1), next_obs=obs, env_reward=rewards,
        components=rewards[..., None] if components is None else torch.as_tensor(components, dtype=torch.float32),
        episode=torch.arange(q), start=torch.zeros(q, dtype=torch.int64),
    )


def pairs_with_sums(sum_left, sum_right, length: int = 2) -> tuple[Segments, Segments]:
    """Pairs whose undiscounted sums are given, spread evenly over `length` steps."""
    left = torch.as_tensor(sum_left, dtype=torch.float64)[:, None].repeat(1, length) / length
    right = torch.as_tensor(sum_right, dtype=torch.float64)[:, None].repeat(1, length) / length
    return segs(left), segs(right)


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def oracle(**kwargs) -> ScriptedTeacher:
    return make_teacher("oracle", component_names=None, **kwargs)


def test_oracle_prefers_higher_return_ties_left():
    left, right = pairs_with_sums([1.0, 3.0, 2.0, -5.0], [2.0, 1.0, 2.0, -4.0])
    labels = oracle().label(left, right, rng())
    assert labels.dtype == np.int64
    assert labels.tolist() == [R, L, L, R]
    assert isinstance(oracle(), Teacher)


def test_env_reward_versus_component_weights():
    # components [run, ctrl]; env reward = run - ctrl prefers left, weighting ctrl alone prefers right
    left_c = torch.tensor([[[2.0, 1.0], [2.0, 1.0]]])
    right_c = torch.tensor([[[0.0, 3.0], [0.0, 3.0]]])
    left = segs(left_c[..., 0] - left_c[..., 1], left_c)
    right = segs(right_c[..., 0] - right_c[..., 1], right_c)
    names = ["run", "ctrl"]
    assert make_teacher(component_names=names).label(left, right, rng()).tolist() == [L]
    assert make_teacher(component_names=names, component_weights={"run": 1.0, "ctrl": -1.0}).label(
        left, right, rng()).tolist() == [L]
    ctrl_only = make_teacher(component_names=names, component_weights={"ctrl": 1.0})
    assert ctrl_only.label(left, right, rng()).tolist() == [R]
    with pytest.raises(ValueError, match=r"unknown reward component.*'speed'.*\['run', 'ctrl'\]"):
        make_teacher(component_names=names, component_weights={"speed": 1.0})
    with pytest.raises(ValueError, match="component_names"):
        make_teacher(component_names=None, component_weights={"run": 1.0})
    with pytest.raises(ValueError, match="carry 2 reward components, the teacher declares 3"):
        make_teacher(component_names=["a", "b", "c"], component_weights={"a": 1.0}).label(left, right, rng())


def test_myopic_teacher_reverses_a_label_and_weights_gamma_power():
    # undiscounted: left 10 > right 4; with gamma 0.5 over H=3: left 10 * 0.25 = 2.5 < right 4 * 1 = 4
    left, right = segs([[10.0, 0.0, 0.0]]), segs([[0.0, 0.0, 4.0]])
    assert oracle().label(left, right, rng()).tolist() == [L]
    assert oracle(gamma=0.5).label(left, right, rng()).tolist() == [R]
    assert make_teacher("myopic", component_names=None).gamma == 0.9

    gen = torch.Generator().manual_seed(1)
    left, right = segs(torch.randn(300, 5, generator=gen)), segs(torch.randn(300, 5, generator=gen))
    weights = torch.tensor([0.8 ** (5 - 1 - t) for t in range(5)], dtype=torch.float64)
    expected = (left.env_reward.double() @ weights < right.env_reward.double() @ weights).long().numpy()
    labels = oracle(gamma=0.8).label(left, right, rng())
    np.testing.assert_array_equal(labels, expected)
    assert (labels != oracle().label(left, right, rng())).any()


def test_equal_exactly_below_threshold_and_overrides_mistakes():
    teacher = oracle(eps_equal=0.5, eps_mistake=1.0)  # every preference is flipped; EQUAL must survive
    left, right = pairs_with_sums([0.0, 0.0, 0.0, 5.0, 0.0], [1.9, 2.0, 2.1, 4.0, -3.0])
    assert teacher.label(left, right, rng()).tolist() == [L, L, L, R, R]  # no threshold before any returns
    teacher.observe_returns([40.0], segment_length=10, max_episode_steps=100)  # theta = 0.5 * 40 * 0.1 = 2
    assert teacher.theta_equal == pytest.approx(2.0)
    assert teacher.label(left, right, rng()).tolist() == [E, L, L, E, R]


def test_equal_is_decided_on_undiscounted_sums():
    teacher = oracle(eps_equal=0.5, gamma=0.5)
    teacher.observe_returns([40.0], segment_length=10, max_episode_steps=100)  # theta_equal = 2
    # sums 4 vs 3 (|diff| 1 < 2: equal) although the myopic sums 1 vs 3 differ by 2
    left, right = segs([[4.0, 0.0, 0.0]]), segs([[0.0, 0.0, 3.0]])
    assert teacher.label(left, right, rng()).tolist() == [E]


def test_skip_exactly_when_max_sum_at_most_threshold():
    teacher = oracle(eps_skip=0.5)
    left, right = pairs_with_sums([2.0, 2.1, 1.0, -5.0, 0.0], [0.0, 0.0, 1.5, 3.0, 0.0])
    assert S not in teacher.label(left, right, rng()).tolist()  # no returns observed yet: skip nothing
    teacher.observe_returns([40.0], segment_length=10, max_episode_steps=100)  # theta = 2
    assert teacher.label(left, right, rng()).tolist() == [S, L, S, R, S]
    # negative returns: B-Pref would stop skipping; we skip below m - (1 - eps)|m| = -4 - 0.5 * 4
    teacher.observe_returns([-40.0], segment_length=10, max_episode_steps=100)
    assert teacher.theta_skip == pytest.approx(-6.0)
    left, right = pairs_with_sums([-7.0, -1.0, -6.0], [-6.5, -8.0, -9.0])
    assert teacher.label(left, right, rng()).tolist() == [S, L, S]
    assert make_teacher("skip", component_names=None).label(left, right, rng()).tolist() == [R, L, L]


def test_mistake_rate_matches_eps():
    n = 5000
    gen = torch.Generator().manual_seed(2)
    left, right = segs(torch.randn(n, 4, generator=gen)), segs(torch.randn(n, 4, generator=gen))
    truth = oracle().label(left, right, rng())
    labels = make_teacher("mistake", component_names=None).label(left, right, np.random.default_rng(3))
    rate = float((labels != truth).mean())
    assert abs(rate - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    assert set(np.unique(labels)) <= {L, R}


def test_noisy_teacher_follows_bradley_terry():
    n = 5000
    left, right = pairs_with_sums([0.0] * n, [0.5] * n)
    labels = make_teacher("noisy", component_names=None).label(left, right, np.random.default_rng(4))
    p = 1.0 / (1.0 + math.exp(-0.5))  # softmax(beta * [0, 0.5])[1] with beta = 1
    assert abs(float((labels == R).mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    sharp = oracle(beta=20.0).label(left, right, np.random.default_rng(4))
    assert float((sharp == R).mean()) > 0.99


def test_threshold_formula_with_and_without_quirk():
    returns_1 = [1000.0] * 5 + [50.0] * 10  # only the last 10 count: mean 50
    returns_2 = returns_1 + [100.0] * 10  # mean 100
    plain = oracle(eps_skip=0.1, eps_equal=0.2)
    quirky = oracle(eps_skip=0.1, eps_equal=0.2, threshold_quirk=True)
    for teacher in (plain, quirky):
        teacher.observe_returns(returns_1, segment_length=50, max_episode_steps=1000)  # margin 2.5
        assert (teacher.theta_skip, teacher.theta_equal) == pytest.approx((0.25, 0.5))
        teacher.observe_returns(returns_2, segment_length=50, max_episode_steps=1000)  # margin 5
    assert (plain.theta_skip, plain.theta_equal) == pytest.approx((0.5, 1.0))
    assert (quirky.theta_skip, quirky.theta_equal) == pytest.approx((0.1 * 0.1 * 5, 0.2 * 0.2 * 5))
    quirky.observe_returns([], segment_length=50, max_episode_steps=1000)  # nothing new: unchanged
    assert quirky.theta_skip == pytest.approx(0.05)
    with pytest.raises(ValueError, match="finite"):
        plain.observe_returns([float("nan")], segment_length=50, max_episode_steps=1000)


def test_presets_and_overrides():
    assert set(TEACHER_PRESETS) == {"oracle", "noisy", "mistake", "skip", "myopic", "equal"}
    expected = {"noisy": ("beta", 1.0), "mistake": ("eps_mistake", 0.1), "skip": ("eps_skip", 0.1),
                "myopic": ("gamma", 0.9), "equal": ("eps_equal", 0.1)}
    oracle_knobs = dict(beta=-1, gamma=1, eps_mistake=0, eps_skip=0, eps_equal=0)
    assert TEACHER_PRESETS["oracle"] == oracle_knobs
    for preset, (knob, value) in expected.items():
        assert TEACHER_PRESETS[preset] == {**oracle_knobs, knob: value}
        teacher = make_teacher(preset, component_names=None)
        assert getattr(teacher, knob) == value and teacher.name == preset
    assert make_teacher(component_names=None).beta is None  # -1: perfectly rational
    changed = make_teacher("mistake", component_names=None, eps_mistake=0.2, gamma=1.0)
    assert changed.eps_mistake == 0.2 and changed.name == "mistake(eps_mistake=0.2)"


@pytest.mark.parametrize("bad, match", [
    (dict(eps_mistake=1.5), "eps_mistake"), (dict(eps_skip=-0.1), "eps_skip"),
    (dict(gamma=0.0), "gamma"), (dict(gamma=1.1), "gamma"), (dict(beta=float("inf")), "beta"),
    (dict(eps_mistakes=0.1), "unknown teacher knob.*eps_mistakes"),
])
def test_knob_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        make_teacher("oracle", component_names=None, **bad)


def test_unknown_preset_suggests_close_matches():
    with pytest.raises(ValueError, match=r"'orcale'.*did you mean oracle"):
        make_teacher("orcale", component_names=None)


def test_label_budget_stops_exactly():
    budget = LabelBudget(50)
    assert [budget.take(30), budget.take(30), budget.take(30)] == [30, 20, 0]
    assert (budget.spent, budget.remaining) == (50, 0)
    resumed = LabelBudget(0)
    resumed.load_state_dict(LabelBudget(50).state_dict() | {"spent": 45})
    assert (resumed.take(10), resumed.remaining) == (5, 0)
    with pytest.raises(ValueError):
        budget.take(-1)


def test_state_dict_round_trip_keeps_thresholds():
    teacher = oracle(eps_skip=0.3, eps_equal=0.3, threshold_quirk=True)
    teacher.observe_returns([20.0, 40.0], segment_length=10, max_episode_steps=100)
    teacher.observe_returns([60.0], segment_length=10, max_episode_steps=100)
    restored = oracle(eps_skip=0.3, eps_equal=0.3, threshold_quirk=True)
    restored.load_state_dict(teacher.state_dict())
    assert restored.state_dict() == teacher.state_dict()
    gen = torch.Generator().manual_seed(5)
    left, right = segs(0.3 * torch.rand(200, 3, generator=gen)), segs(0.3 * torch.rand(200, 3, generator=gen))
    labels = teacher.label(left, right, rng())
    np.testing.assert_array_equal(restored.label(left, right, rng()), labels)
    assert {S, E} <= set(labels.tolist())
    # a third round continues the quirk (eps twice) instead of restarting at eps once
    for t in (teacher, restored):
        t.observe_returns([100.0], segment_length=10, max_episode_steps=100)
    assert restored.theta_skip == teacher.theta_skip == pytest.approx(0.3 * 0.3 * 10)


def test_mismatched_query_halves_are_an_error():
    with pytest.raises(ValueError, match="query halves differ"):
        oracle().label(segs([[1.0, 2.0]]), segs([[1.0, 2.0], [0.0, 0.0]]), rng())
