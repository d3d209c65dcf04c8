"""HERON's decision tree on hand-made segment pairs: level order, margins, directions, ties, groups, scale invariance,
per-transition mode, the reward model's component inputs and config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from reward_learning.heron import HeronConfig, HeronTeacher
from reward_learning.models import RewardEnsemble, RewardModelConfig
from reward_learning.segments import Label, Segments

L, R, E, S = Label.LEFT, Label.RIGHT, Label.EQUAL, Label.SKIP
NAMES = ["a", "b", "c", "d"]
MAXIMIZE = dict.fromkeys(NAMES, "maximize")


def factor_segments(totals, length: int = 2, absorbing_from: int | None = None) -> Segments:
    """Segments whose factors, spread evenly over `length` steps, sum to `totals` [q, k] over the real steps; steps
    from `absorbing_from` on are absorbing and carry junk factors (which must count 0)."""
    totals = torch.as_tensor(totals, dtype=torch.float64)
    q, k = totals.shape
    real = length if absorbing_from is None else absorbing_from
    per_step = (totals / real)[:, None, :].repeat(1, length, 1)
    absorbing = torch.zeros(q, length, dtype=torch.bool)
    if absorbing_from is not None:
        absorbing[:, absorbing_from:] = True
        per_step[:, absorbing_from:] = 1e6
    obs = torch.zeros(q, length, 3)
    return Segments(obs=obs, action=torch.zeros(q, length, 1), next_obs=obs, env_reward=torch.zeros(q, length),
                    components=per_step, episode=torch.arange(q), start=torch.zeros(q, dtype=torch.int64),
                    absorbing=absorbing)


def heron(levels, margins=0.0, directions=None, **kwargs) -> HeronTeacher:
    return HeronTeacher(levels, component_names=NAMES[: kwargs.pop("k", 4)], directions=directions or MAXIMIZE,
                        margins=margins, **kwargs)


def labels_of(teacher: HeronTeacher, left, right, **kwargs) -> list[int]:
    return teacher.label(factor_segments(left, **kwargs), factor_segments(right, **kwargs),
                         np.random.default_rng(0)).tolist()


def test_first_level_decides_and_later_levels_only_break_ties():
    teacher = heron(["a", "b", "c"])
    left = [[2, 0, 0, 0], [1, 0, 5, 0], [1, 3, 0, 0], [1, 1, 1, 9]]
    right = [[1, 9, 9, 0], [1, 1, 0, 0], [1, 3, 2, 0], [1, 1, 1, 0]]
    # a decides; a ties so b decides (c ignored); a, b tie so c decides; all tie (d is in no level)
    assert labels_of(teacher, left, right) == [L, R, R, S]


def test_margins_are_multiples_of_the_pool_std():
    # pool of a over both halves: [0, 1, 0, 3] -> sample std 1.414; margin 1 * std lets 3 - 0 count, not 1 - 0
    teacher = heron(["a", "b"], margins=[1.0, 0.0])
    assert labels_of(teacher, [[0, 1, 0, 0], [3, 0, 0, 0]], [[1, 0, 0, 0], [0, 1, 0, 0]]) == [L, L]
    pool_std = np.std([0, 3, 1, 0], ddof=1)
    assert 1 < pool_std < 3
    # without a margin the first level decides both
    assert labels_of(heron(["a", "b"]), [[0, 1, 0, 0], [3, 0, 0, 0]], [[1, 0, 0, 0], [0, 1, 0, 0]]) == [R, L]


def test_candidates_set_the_scale_instead_of_the_labelled_pairs():
    teacher = heron(["a", "b"], margins=[1.0, 0.0])
    wide = factor_segments([[0, 0, 0, 0], [100, 1, 0, 0], [-100, -1, 0, 0]])
    teacher.observe_candidates(wide)  # std of a is 100: a difference of 3 is now within the margin
    assert labels_of(teacher, [[3, 0, 0, 0]], [[0, 1, 0, 0]]) == [R]


def test_candidates_scale_only_the_next_labelling_round():
    teacher = heron(["a"], margins=1.0)
    left, right = [[3, 0, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 0], [3, 0, 0, 0]]
    assert labels_of(teacher, left, right) == [L, R]  # own pool: std of a is 1.7, a difference of 3 counts
    teacher.observe_candidates(factor_segments([[0, 0, 0, 0], [100, 0, 0, 0], [-100, 0, 0, 0]]))
    assert labels_of(teacher, [[3, 0, 0, 0]], [[0, 0, 0, 0]]) == [S]  # that round: std 100, within the margin
    assert labels_of(teacher, left, right) == [L, R]  # the next round without candidates: not the old std 100


def test_directions_are_respected():
    left, right = [[1, 0, 0, 0]], [[2, 0, 0, 0]]
    assert labels_of(heron(["a"]), left, right) == [R]
    assert labels_of(heron(["a"], directions={**MAXIMIZE, "a": "minimize"}), left, right) == [L]


def test_ties_skip_or_equal():
    left, right = [[1, 1, 0, 0], [1, 2, 0, 0]], [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert labels_of(heron(["a", "b"]), left, right) == [S, L]
    assert labels_of(heron(["a", "b"], ties="equal"), left, right) == [E, L]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_any_number_of_levels_each_deciding_only_after_ties(depth):
    levels = NAMES[:depth]
    teacher = heron(levels)
    for decider in range(depth):  # pairs equal on every level before `decider`, left ahead there, behind after
        left = [[1.0 if i == decider else (0.0 if i < decider else -5.0) for i in range(4)]]
        right = [[0.0 if i <= decider else 5.0 for i in range(4)]]
        assert labels_of(teacher, left, right) == [L], (depth, decider)
    assert labels_of(teacher, [[1, 1, 1, 1]], [[1, 1, 1, 1]]) == [S]


def test_each_level_uses_its_own_margin_multiplier():
    # the paper's robotics code used the second multiplier at levels 3 and 4; here level 3's own 0 lets c decide
    teacher = heron(["a", "b", "c"], margins=[0.0, 100.0, 0.0])
    assert labels_of(teacher, [[1, 2, 3, 0], [1, 2, 3, 0]], [[1, 1, 2, 0], [1, 1, 5, 0]]) == [L, R]


def test_group_compares_the_sum_of_std_normalised_signed_factors():
    teacher = heron([["a", "b"], "c"], directions={**MAXIMIZE, "b": "minimize"})
    # candidates give a std 1 and b std 1000: a difference of 1 in a weighs as much as 1000 in b
    teacher.observe_candidates(factor_segments([[0, 0, 0, 0], [1, 1000, 1, 0], [2, 2000, 2, 0]]))
    left = [[1, 500, 0, 0], [1, 1000, 0, 0], [2, 2000, 3, 0]]
    right = [[0, 0, 0, 0], [0, 0, 7, 0], [0, 0, 3, 0]]
    # +1 in a beats +500 in b (minimised) though b's raw difference is far larger; +1 in a and +1000 in b cancel,
    # so the next level decides; both levels tie
    assert labels_of(teacher, left, right) == [L, R, S]


def test_group_order_within_a_level_does_not_matter():
    gen = np.random.default_rng(3)
    left, right = gen.normal(size=(50, 4)), gen.normal(size=(50, 4))
    one = labels_of(heron([["a", "c"], ["b", "d"]], margins=0.3), left, right)
    other = labels_of(heron([["c", "a"], ["d", "b"]], margins=0.3), left, right)
    assert one == other and len(set(one)) == 3


@pytest.mark.parametrize("column, scale", [(0, 1e-3), (1, 7.5), (2, 1e4), (3, 0.2)])
def test_labels_are_invariant_to_scaling_a_factor(column, scale):
    gen = np.random.default_rng(column)
    left, right = gen.normal(size=(200, 4)), gen.normal(size=(200, 4))
    for levels in (["a", "b", "c", "d"], [["a", "b"], ["c", "d"]], [["d", "a", "c", "b"]]):
        teacher = heron(levels, margins=0.5)
        base = labels_of(teacher, left, right)
        factor = np.ones(4)
        factor[column] = scale
        assert labels_of(teacher, left * factor, right * factor) == base
        assert {L, R} <= set(base)


def test_absorbing_steps_count_zero():
    teacher = heron(["a"], k=1)
    left = factor_segments([[2.0]], length=4, absorbing_from=1)  # fell after one step: 2 in total (1e6 junk after)
    right = factor_segments([[3.0]], length=4)
    assert teacher.label(left, right, np.random.default_rng(0)).tolist() == [R]


def test_constant_factor_never_decides():
    teacher = heron(["a", "b"], margins=[1.0, 0.0])
    # a differs only by rounding noise around a large constant (a relative std would call it a huge difference)
    left, right = [[1 + 1e-12, 0, 0, 0], [1, 5, 0, 0]], [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert labels_of(teacher, left, right) == [R, L]


def test_per_transition_compares_single_steps_and_rejects_segments():
    teacher = heron(["a", "b"], per_transition=True)
    assert labels_of(teacher, [[1, 0, 0, 0], [1, 0, 0, 0]], [[1, 2, 0, 0], [0, 9, 0, 0]], length=1) == [R, L]
    with pytest.raises(ValueError, match="segment_length to 1"):
        labels_of(teacher, [[1, 0, 0, 0]], [[0, 0, 0, 0]], length=3)


def test_no_queries_gives_no_labels():
    teacher = heron(["a"])
    empty = factor_segments(np.zeros((0, 4)))
    assert teacher.label(empty, empty, np.random.default_rng(0)).shape == (0,)


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": ["a", "speed"]}, r"component\(s\) \['speed'\]; this env declares \['a', 'b', 'c', 'd'\]"),
    ({"levels": ["a", ["b", "a"]]}, r"names \['a'\] more than once"),
    ({"levels": ["a", []]}, "empty level"),
    ({"levels": []}, "levels is empty"),
    ({"levels": ["a", "b"], "margins": [1.0]}, "1 values for 2 levels"),
    ({"levels": ["a"], "margins": [-1.0]}, "finite and >= 0"),
    ({"levels": ["a"], "directions": {"a": "up"}}, "maximize or minimize"),
    ({"levels": ["a"], "directions": {}}, r"no direction .* for \['a'\]"),
    ({"levels": ["a"], "ties": "coin"}, "skip or equal"),
])
def test_clear_errors(kwargs, message):
    kwargs = {"directions": MAXIMIZE, **kwargs}
    with pytest.raises(ValueError, match=message):
        HeronTeacher(kwargs.pop("levels"), component_names=NAMES, **kwargs)


def test_config_section_validates_and_builds_the_teacher():
    config = HeronConfig(levels=["a", ["b", "c"]], margins=[0.0, 0.5], directions={"b": "minimize"}, ties="equal")
    teacher = HeronTeacher.from_config(config, component_names=NAMES, spec_directions=MAXIMIZE)
    assert teacher.levels == [("a",), ("b", "c")] and teacher.margins == [0.0, 0.5]
    assert teacher.directions == {"a": "maximize", "b": "minimize", "c": "maximize"}
    assert teacher.tie_label == Label.EQUAL
    with pytest.raises(ValueError, match=r"heron.directions: unknown reward component\(s\) \['z'\]"):
        HeronTeacher.from_config(HeronConfig(levels=["a"], directions={"z": "minimize"}), component_names=NAMES,
                                 spec_directions=MAXIMIZE)
    with pytest.raises(ValidationError, match="3 values for 2 levels"):
        HeronConfig(levels=["a", "b"], margins=[1, 2, 3])
    with pytest.raises(ValidationError, match="levels"):
        HeronConfig(margins=1.0)


def test_reward_model_can_read_the_components():
    config = RewardModelConfig(inputs="obs_action_components", hidden_sizes=[8], normalize_inputs=True)
    model = RewardEnsemble((3,), 1, config, component_dim=4)
    segments = factor_segments(np.ones((5, 4)), length=6)
    assert model.fields == ("obs", "action", "components")
    assert model(segments.transitions()).shape == (30,)
    model.fit_input_stats(segments.transitions())
    assert model.in_mean.shape == (3 + 1 + 4,)
    with pytest.raises(ValueError, match="component_dim=0"):
        RewardEnsemble((3,), 1, config)


def test_reward_model_with_components_saves_and_loads(tmp_path):
    config = RewardModelConfig(inputs="obs_action_components", hidden_sizes=[8])
    model = RewardEnsemble((3,), 1, config, component_dim=4)
    model.save(tmp_path / "rm.pt")
    loaded = RewardEnsemble.load(tmp_path / "rm.pt")
    batch = factor_segments(np.arange(8.0).reshape(2, 4)).transitions()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch))
